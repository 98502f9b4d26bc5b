/// The development demo page: no build step, no CDN.
enum DemoPage {
    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>notify demo</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; max-width: 42rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  header { display: flex; gap: .5rem; align-items: center; flex-wrap: wrap; }
  input { padding: .35rem .5rem; font: inherit; }
  button { padding: .35rem .8rem; font: inherit; cursor: pointer; }
  #badge { display: inline-block; min-width: 1.6rem; padding: .1rem .45rem; border-radius: 1rem; background: #c62828; color: #fff; text-align: center; font-weight: 600; }
  #badge[data-count="0"] { background: #9e9e9e; }
  #status { color: #666; font-size: .9em; }
  ul { list-style: none; padding: 0; }
  li { padding: .6rem .8rem; border-bottom: 1px solid #eee; }
  li.unread { background: #fff8e1; font-weight: 600; }
  small { color: #777; font-weight: normal; }
</style>
</head>
<body>
<h1>notify <span id="badge" data-count="0">0</span></h1>
<header>
  <label>User <input id="user" value="ana" size="12"></label>
  <button id="connect">Connect</button>
  <button id="publish" disabled>Publish a test event</button>
  <button id="read" disabled>Mark all read</button>
  <span id="status">not connected</span>
</header>
<ul id="feed"></ul>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let token = null, socket = null, lastId = null;
const items = new Map();

function setBadge(n) { $("badge").textContent = n; $("badge").dataset.count = n; }
function render() {
  const list = $("feed"); list.innerHTML = "";
  [...items.values()].sort((a, b) => b.id.localeCompare(a.id)).forEach((n) => {
    const li = document.createElement("li");
    li.className = n.read ? "read" : "unread"; li.dataset.id = n.id;
    const others = (n.actor_count || 1) - 1;
    li.textContent = `${n.username || n.trigger_user}${others ? ` and ${others} other${others > 1 ? "s" : ""}` : ""} · action ${n.action} on ${n.resource_type} ${n.resource_id} `;
    const small = document.createElement("small"); small.textContent = n.excerpt || ""; li.appendChild(small);
    list.appendChild(li);
  });
}
// One entry per group: an updated group replaces the id it had (and a
// replayed one the entry with its group_id).
function put(n, replaces) {
  let wasUnread = false;
  for (const [id, old] of items) {
    if (id === n.id || id === replaces || (n.group_id && old.group_id === n.group_id)) { if (!old.read) wasUnread = true; items.delete(id); }
  }
  items.set(n.id, n);
  if (!n.read && !wasUnread) setBadge(Number($("badge").textContent) + 1);
  if (!lastId || n.id > lastId) lastId = n.id;
  render();
}
async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { "Content-Type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) } });
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}
async function load() {
  const page = await api("/v1/notifications?limit=50");
  items.clear(); page.items.forEach((n) => items.set(n.id, n)); setBadge(page.unread); render();
  // Resume from the newest loaded id; from the lowest id when the feed is
  // empty, so nothing stored between this load and the socket is missed.
  const newest = page.items.length ? page.items[0].id : "0".repeat(26);
  if (!lastId || newest > lastId) lastId = newest;
}
function open() {
  const url = new URL("/ws", location.href); url.protocol = url.protocol.replace("http", "ws");
  url.searchParams.set("access_token", token); if (lastId) url.searchParams.set("since", lastId);
  socket = new WebSocket(url);
  socket.onopen = () => { $("status").textContent = `connected as ${$("user").value}`; };
  socket.onclose = (e) => {
    $("status").textContent = `disconnected (${e.code}); reconnecting`;
    setTimeout(async () => { if (!lastId) await load(); open(); }, 1000);
  };
  socket.onmessage = (e) => {
    const frame = JSON.parse(e.data);
    if (frame.type === "hello") setBadge(frame.unread);
    else if (frame.type === "notification.created" || frame.type === "notification.updated") {
      put(frame.notification, frame.replaces);
      // Shown on this page as it arrives: received and seen.
      socket.send(JSON.stringify({ type: "seen", ids: [frame.notification.id] }));
    }
    else if (frame.type === "notification.deleted") { const n = items.get(frame.id); if (n && !n.read) setBadge(Math.max(0, Number($("badge").textContent) - 1)); items.delete(frame.id); render(); }
    else if (frame.type === "notification.read") { let changed = 0; frame.ids.forEach((id) => { const n = items.get(id); if (n && !n.read) { n.read = true; changed++; } }); setBadge(Math.max(0, Number($("badge").textContent) - changed)); render(); }
    else if (frame.type === "reset" || frame.type === "quiet_hours.summary") load();
  };
}
$("connect").onclick = async () => {
  const { token: t } = await api("/dev/token", { method: "POST", body: JSON.stringify({ user: $("user").value }) });
  token = t; lastId = null; if (socket) { socket.onclose = null; socket.close(); }
  await load(); open();
  $("publish").disabled = false; $("read").disabled = false;
};
$("publish").onclick = () => api("/dev/events", { method: "POST", body: JSON.stringify({ user: $("user").value }) });
$("read").onclick = () => api("/v1/notifications/read", { method: "POST", body: JSON.stringify({ all: true }) });
</script>
</body>
</html>
"""#
}
