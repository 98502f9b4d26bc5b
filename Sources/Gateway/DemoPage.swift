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
  .deliveries { display: block; margin-top: .2rem; font-size: .8em; font-weight: normal; color: #555; }
  .deliveries span { margin-right: .6rem; }
  .deliveries .sent { color: #2e7d32; } .deliveries .failed { color: #c62828; } .deliveries .pending, .deliveries .retrying { color: #ef6c00; }
</style>
</head>
<body>
<h1>notify <span id="badge" data-count="0">0</span></h1>
<header>
  <label>User <input id="user" value="ana" size="12"></label>
  <button id="connect">Connect</button>
  <button id="publish" disabled>Publish a test event</button>
  <button id="read" disabled>Mark all read</button>
  <button id="push" disabled title="Web Push to this browser (needs VAPID_PRIVATE_KEY and DELIVERY_CHANNELS=webpush)">Enable push</button>
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
    li.textContent = (n.title || `${n.username || n.trigger_user}${others ? ` and ${others} other${others > 1 ? "s" : ""}` : ""} · action ${n.action} on ${n.resource_type} ${n.resource_id}`) + " ";
    const small = document.createElement("small"); small.textContent = n.body ?? n.excerpt ?? ""; li.appendChild(small);
    // Delivery beyond the app: one status per channel (email, webpush, webhook).
    if ((n.deliveries || []).length) {
      const line = document.createElement("span"); line.className = "deliveries";
      n.deliveries.forEach((d) => {
        const s = document.createElement("span"); s.className = d.status;
        s.textContent = `${d.channel}: ${d.status}${d.attempts > 1 ? ` (${d.attempts} tries)` : ""}`;
        if (d.error) s.title = d.error;
        line.appendChild(s);
      });
      li.appendChild(line);
    }
    list.appendChild(li);
  });
}
// One entry per group: an updated group replaces the id it had (and a
// replayed one the entry with its group_id).
let lastLive = 0;
function put(n, replaces) {
  lastLive = Date.now();
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
// Delivery statuses change in the store, not on the socket: reload while a
// delivery may still change (just arrived, pending or being retried).
setInterval(() => {
  if (!token) return;
  const settling = [...items.values()].some((n) => (n.deliveries || []).some((d) => d.status === "pending" || d.status === "retrying"));
  if (settling || Date.now() - lastLive < 30000) load().catch(() => {});
}, 3000);
function bytes(base64url) {
  const text = atob(base64url.replace(/-/g, "+").replace(/_/g, "/"));
  return Uint8Array.from(text, (c) => c.charCodeAt(0));
}
$("push").onclick = async () => {
  try {
    const { public_key } = await api("/v1/channels/webpush/key");
    const registration = await navigator.serviceWorker.register("/dev/sw.js", { scope: "/" });
    await navigator.serviceWorker.ready;
    const subscription = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: bytes(public_key) });
    await api("/v1/channels/webpush", { method: "POST", body: JSON.stringify(subscription) });
    $("status").textContent = `push on for ${$("user").value}`;
  } catch (e) { $("status").textContent = `push: ${e.message}`; }
};
$("connect").onclick = async () => {
  const { token: t } = await api("/dev/token", { method: "POST", body: JSON.stringify({ user: $("user").value }) });
  token = t; lastId = null; if (socket) { socket.onclose = null; socket.close(); }
  await load(); open();
  $("publish").disabled = false; $("read").disabled = false; $("push").disabled = !("serviceWorker" in navigator && "PushManager" in window);
};
$("publish").onclick = () => api("/dev/events", { method: "POST", body: JSON.stringify({ user: $("user").value }) });
$("read").onclick = () => api("/v1/notifications/read", { method: "POST", body: JSON.stringify({ all: true }) });
</script>
</body>
</html>
"""#

    /// The demo's service worker: shows each push as a system notification
    /// (one per notification id: a repeat replaces it) and opens its link
    /// when clicked. An app's own worker does the same with the payload
    /// `{"id","title","body","url","icon","created_at"}`.
    static let serviceWorker = #"""
self.addEventListener("push", (event) => {
  const n = event.data ? event.data.json() : {};
  event.waitUntil(self.registration.showNotification(n.title || "notify", { body: n.body || "", tag: n.id, icon: n.icon, data: { url: n.url } }));
});
self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = event.notification.data && event.notification.data.url;
  if (url) event.waitUntil(clients.openWindow(url));
});
"""#
}
