import Foundation
import Hummingbird
import HummingbirdCore
import JSON
import KeyValueStore
public import Logging
public import NATS
import NIOCore
import NIOHTTP1
import NIOWebSocket
public import Notifications
public import ServiceLifecycle
import Synchronization

/// Open WebSockets and SSE streams.
final class OpenConnections: Sendable {
    let webSockets = Atomic<Int>(0)
    let eventStreams = Atomic<Int>(0)
}

/// The gateway: HTTP feed API, WebSocket and Server-Sent Events on one port.
///
/// Authenticates clients with HS256 JWTs, pushes each user their own
/// notifications live (one NATS subscription per connected user), resumes
/// without gap or duplicate, and serves the feed (list, unread count, mark
/// read). Several gateways can run side by side: they share nothing but
/// NATS and the store.
public final class Gateway: Sendable {
    public let configuration: GatewayConfiguration
    let connection: NATSConnection
    let repository: NotificationRepository
    let hub: UserHub
    let verifier: TokenVerifier
    /// Checks email unsubscribe links (the base URL is not used here).
    let unsubscribeLinks: UnsubscribeLinks
    let metrics = GatewayMetrics()
    let logger: Logger
    let open = OpenConnections()
    let expiry = ExpiryService()
    /// Clients' delivery receipts, written in batches.
    let receipts: ReceiptWriter
    /// For the development page's "publish a test event" button.
    let devPublisher: JetStream?
    /// `/health` and `/metrics`.
    private let operations: OperationsEndpoints
    /// The profile and resource changes followed (enrichment on).
    private let changes: [NATSHandlerSubscription]

    /// - Parameter metricsText: the Prometheus exposition served at `/metrics`.
    public init(
        configuration: GatewayConfiguration,
        connection: NATSConnection,
        repository: NotificationRepository,
        logger: Logger,
        metricsText: (@Sendable () -> [UInt8])? = nil
    ) throws {
        var logger = logger
        logger[metadataKey: "component"] = "gateway"
        self.configuration = configuration
        self.connection = connection
        self.repository = repository
        self.logger = logger
        self.receipts = ReceiptWriter(repository: repository, logger: logger)
        self.verifier = TokenVerifier(secret: configuration.jwtSecret, issuer: configuration.jwtIssuer, audience: configuration.jwtAudience)
        self.unsubscribeLinks = UnsubscribeLinks(baseURL: "", secret: configuration.unsubscribeSecret ?? configuration.jwtSecret)
        self.hub = UserHub(
            connection: connection, subjects: configuration.subjects,
            maxConnectionsPerUser: configuration.maxConnectionsPerUser, metrics: metrics, tracksActors: repository.enrichment)
        self.devPublisher = configuration.production ? nil : try JetStream(connection: connection)
        let hub = self.hub
        self.changes = repository.enrichment
            ? try Self.followChanges(connection: connection, repository: repository, hub: hub, subjects: configuration.subjects) : []
        let cache = repository.cache
        connection.onReconnect { [weak hub, logger] url in
            // Changes announced while away are missed: read them anew.
            cache.clear()
            guard let closed = hub?.resumeAll() else { return }
            logger.info("NATS reconnected: live connections asked to resume from the store", metadata: [
                "url": .string(url), "connections": .stringConvertible(closed),
            ])
        }
        let open = self.open
        self.operations = try OperationsEndpoints(
            connection: connection, repository: repository, consumer: configuration.consumer, metrics: metrics,
            metricsText: metricsText, version: configuration.version,
            openConnections: { (open.webSockets.load(ordering: .relaxed), open.eventStreams.load(ordering: .relaxed)) })
    }

    /// Keeps the repository's profile and resource cache current from the
    /// changes workers announce, and sends each `profile.updated` to the
    /// connections that were shown that actor.
    private static func followChanges(
        connection: NATSConnection, repository: NotificationRepository, hub: UserHub, subjects: OutboundSubjects
    ) throws -> [NATSHandlerSubscription] {
        let cache = repository.cache
        let profiles = try connection.subscribe(subjects.profiles + ".*.updated") { [weak hub] message in
            guard let change = PublishedChange(message: message.payload) else { return }
            cache.forget(change)
            if case .profile(let user) = change.subject { hub?.profileChanged(user, frame: message.payload) }
        }
        let resources = try connection.subscribe(subjects.resourceUpdates) { message in
            if let change = PublishedChange(message: message.payload) { cache.forget(change) }
        }
        cache.follow()
        return [profiles, resources]
    }

    /// The services to run, in this order: token expiry, the HTTP server,
    /// then the drain. A `ServiceGroup` stops services in reverse, so at
    /// shutdown the drain closes WebSockets (1001) and ends SSE streams first.
    /// `onListening` receives the bound port.
    public func services(onListening: @escaping @Sendable (Int) async -> Void = { _ in }) -> [any Service] {
        let router = Router(context: GatewayContext.self)
        addRoutes(to: router)
        let application = Application(
            router: router,
            server: .gateway(self),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "notify"),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? 0) },
            logger: logger)
        // Stopped in reverse order: receipts are written after the last
        // connection closed.
        return [receipts, expiry, application, DrainService(gateway: self)]
    }

    // MARK: Routes

    private func addRoutes(to router: Router<GatewayContext>) {
        router.add(middleware: RequestMetricsMiddleware(metrics: metrics))
        router.add(middleware: CORSMiddleware(configuration: configuration))
        operations.add(to: router)
        // Reached by plain GETs and by refused upgrades (see `GatewayChannel`).
        router.get("/ws") { [self] request, _ -> Response in
            if let refusal = upgradeRefusal(authorization: request.headers[.authorization], query: request.uri.query, origin: request.headers[.origin]) {
                throw refusal
            }
            throw APIError(.upgradeRequired, code: "upgrade_required", message: "connect with a WebSocket client")
        }
        if !configuration.production {
            DevelopmentRoutes.add(to: router, gateway: self)
        }
        let api = router.group("v1/notifications").add(middleware: AuthenticationMiddleware(verifier: verifier, metrics: metrics))
        api.get { [self] request, context in try await listFeed(request, user: try user(context)) }
        api.get("unread_count") { [self] _, context in
            var json = JSONWriterBridge()
            json.count("unread", try await repository.unreadCount(owner: try user(context)))
            return jsonResponse(json.bytes)
        }
        api.post("read") { [self] request, context in try await markRead(request, user: try user(context)) }
        api.post("receipts") { [self] request, context in try await postReceipts(request, user: try user(context)) }
        api.get(":id/actors") { [self] request, context in try await listActors(request, context: context) }
        let preferences = router.group("v1/preferences").add(middleware: AuthenticationMiddleware(verifier: verifier, metrics: metrics))
        preferences.get { [self] _, context in
            jsonResponse(try await repository.preferences(owner: try user(context)).json)
        }
        preferences.put { [self] request, context in try await putPreferences(request, user: try user(context)) }
        let channels = router.group("v1/channels").add(middleware: AuthenticationMiddleware(verifier: verifier, metrics: metrics))
        channels.get { [self] _, context in
            jsonResponse(try await repository.deliveryAddresses(owner: try user(context)).json)
        }
        channels.put { [self] request, context in try await putChannels(request, user: try user(context)) }
        channels.post("webpush") { [self] request, context in try await changePushSubscription(request, user: try user(context), add: true) }
        channels.delete("webpush") { [self] request, context in try await changePushSubscription(request, user: try user(context), add: false) }
        // No token: the browser that registers a service worker needs the
        // key before it can subscribe.
        router.get("v1/channels/webpush/key") { [self] _, _ -> Response in
            guard let key = configuration.vapidPublicKey else {
                throw APIError(.notFound, code: "webpush_off", message: "Web Push is not enabled on this server (VAPID_PRIVATE_KEY)")
            }
            var json = JSONWriterBridge()
            json.raw("{\"public_key\":")
            json.string(key)
            json.raw("}")
            return jsonResponse(json.bytes)
        }
        router.get("v1/unsubscribe") { [self] request, _ in try unsubscribePage(request) }
        router.post("v1/unsubscribe") { [self] request, _ in try await unsubscribe(request) }
        api.get("stream") { [self] request, context in try await eventStream(request, token: try token(context)) }
        let rooms = router.group("v1/rooms").add(middleware: AuthenticationMiddleware(verifier: verifier, metrics: metrics))
        rooms.get(":room/notifications") { [self] request, context in try await listRoom(request, context: context) }
    }

    /// A room named in a request, checked against the user: broadcast
    /// rooms are public, `user:<id>` only for that user.
    private func roomName(_ text: String, user: String) throws -> RoomName {
        let text = text.removingPercentEncoding ?? text
        guard let name = RoomName(text) else {
            throw APIError.badRequest("a room is channel:<id>, global or user:<id> (ids of 1–128 characters A–Z, a–z, 0–9, '_' or '-')")
        }
        if case .user(let id) = name, id != user {
            throw APIError(.forbidden, code: "forbidden", message: "user rooms are private: user:\(id) is not yours")
        }
        return name
    }

    /// `GET /v1/rooms/<room>/notifications?limit=&before=`: a room's
    /// history, newest first, paged like the feed.
    private func listRoom(_ request: Request, context: GatewayContext) async throws -> Response {
        let user = try user(context)
        let name = try roomName(context.parameters.get("room") ?? "", user: user)
        let (limit, before) = try pageParameters(request)
        switch name {
        case .user:
            return try await listFeed(request, user: user)
        case .room(let room):
            let page = try await repository.feed(owner: room.owner, limit: limit, before: before)
            hub.noteActors(page.items.flatMap(\.actorIDs), for: room.owner)
            var json = JSONWriterBridge()
            json.roomFeed(page, room: room)
            return jsonResponse(json.bytes)
        }
    }

    private func token(_ context: GatewayContext) throws -> VerifiedToken {
        guard let token = context.token else { throw APIError.unauthorized(.missing) }
        return token
    }

    private func user(_ context: GatewayContext) throws -> String {
        try token(context).user
    }

    /// `limit` (1–100, default 20) and `before` (a cursor) of a paged list.
    private func pageParameters(_ request: Request) throws -> (limit: Int, before: String?) {
        let parameters = request.uri.queryParameters
        var limit = 20
        if let text = parameters["limit"] {
            guard let value = Int(text), (1...100).contains(value) else {
                throw APIError.badRequest("limit must be a whole number from 1 to 100")
            }
            limit = value
        }
        var before: String?
        if let text = parameters["before"], !text.isEmpty {
            guard NotificationIDGenerator.isValid(String(text)) else {
                throw APIError.badRequest("before must be the next cursor of a previous page")
            }
            before = String(text)
        }
        return (limit, before)
    }

    /// `GET /v1/notifications/<id>/actors?limit=&before=`: everyone in an
    /// aggregated notification, newest first.
    private func listActors(_ request: Request, context: GatewayContext) async throws -> Response {
        let user = try user(context)
        guard let id = context.parameters.get("id"), NotificationIDGenerator.isValid(id) else {
            throw APIError.badRequest("the path must hold a notification id")
        }
        let (limit, before) = try pageParameters(request)
        guard let page = try await repository.actors(owner: user, notification: id, limit: limit, before: before) else {
            throw APIError(.notFound, code: "not_found", message: "no notification \(id) in your feed")
        }
        hub.noteActors(page.items.map(\.triggerUser), for: user)
        var json = JSONWriterBridge()
        json.actors(page)
        return jsonResponse(json.bytes)
    }

    /// `POST /v1/notifications/receipts` with `{"delivered":[…],"seen":[…]}`
    /// (either or both): receipts for clients without a WebSocket (SSE).
    /// Answers `202 {"accepted":N}` once their batch was written (or queued again after a store failure).
    private func postReceipts(_ request: Request, user: String) async throws -> Response {
        let body = try await request.body.collect(upTo: 256 * 1024)
        guard case .object(let object)? = try? JSONParser.parse(Array(body.readableBytesView)), !object.isEmpty,
              object.keys.allSatisfy({ $0 == "delivered" || $0 == "seen" }) else {
            throw APIError.badRequest(#"the body must be {"delivered":[…],"seen":[…]} (either or both)"#)
        }
        var receipts: [Receipt] = []
        for (name, kind) in [("delivered", Receipt.Kind.delivered), ("seen", .seen)] where object[name] != nil {
            switch ClientFrame.ids(object[name], name: name) {
            case .success(let ids): receipts += ids.map { Receipt(owner: user, id: $0, kind: kind) }
            case .failure(let error): throw APIError.badRequest(error.message)
            }
        }
        await self.receipts.write(receipts)
        var json = JSONWriterBridge()
        json.count("accepted", Int64(receipts.count))
        return jsonResponse(json.bytes, status: .accepted)
    }

    /// `PUT /v1/preferences`: replaces the user's preferences; the user's
    /// connections (and the gateways holding them) get `preferences.updated`.
    private func putPreferences(_ request: Request, user: String) async throws -> Response {
        let body = try await request.body.collect(upTo: 512 * 1024)
        let preferences: Preferences
        switch Preferences.parse(Array(body.readableBytesView)) {
        case .success(let parsed): preferences = parsed
        case .failure(let error): throw APIError.badRequest(error.message)
        }
        try await repository.setPreferences(preferences, owner: user)
        var frame = JSONWriterBridge()
        frame.preferencesUpdated(preferences)
        do {
            try connection.publish(OutboundMessage.userSubject(user, prefix: configuration.userSubjectPrefix), payload: frame.bytes)
        } catch {
            logger.warning("publishing preferences.updated failed; connections pick the quiet hours up when they reconnect", metadata: [
                "user": .string(user), "error": .string(error.description),
            ])
        }
        return jsonResponse(preferences.json)
    }

    /// `PUT /v1/channels`: replaces where the user is reached outside the
    /// app; a new webhook URL gets a new signing secret.
    private func putChannels(_ request: Request, user: String) async throws -> Response {
        let body = try await request.body.collect(upTo: 64 * 1024)
        let current = try await repository.deliveryAddresses(owner: user)
        switch DeliveryAddresses.parse(Array(body.readableBytesView), current: current, newSecret: Self.webhookSecret) {
        case .success(let addresses):
            try await repository.setDeliveryAddresses(addresses, owner: user)
            return jsonResponse(addresses.json)
        case .failure(let error):
            throw APIError.badRequest(error.message)
        }
    }

    /// `POST /v1/channels/webpush` adds the browser's push subscription
    /// (its `PushSubscription.toJSON()`); `DELETE` with the same body (or
    /// just its `endpoint`) removes it.
    private func changePushSubscription(_ request: Request, user: String, add: Bool) async throws -> Response {
        let body = try await request.body.collect(upTo: 16 * 1024)
        guard case .object(let fields)? = try? JSONParser.parse(Array(body.readableBytesView)) else {
            throw APIError.badRequest("the body must be a JSON object")
        }
        var addresses = try await repository.deliveryAddresses(owner: user)
        if add {
            let subscription: PushSubscription
            switch DeliveryAddresses.pushSubscription(.object(fields)) {
            case .success(let parsed): subscription = parsed
            case .failure(let error): throw APIError.badRequest(error.message)
            }
            addresses.pushSubscriptions.removeAll { $0.endpoint == subscription.endpoint }
            addresses.pushSubscriptions.append(subscription)
            // The oldest device makes room for a new one.
            if addresses.pushSubscriptions.count > DeliveryAddresses.maxPushSubscriptions { addresses.pushSubscriptions.removeFirst() }
        } else {
            guard case .string(let endpoint)? = fields["endpoint"] else { throw APIError.badRequest(#"the body must name the subscription: {"endpoint":"https://…"}"#) }
            addresses.pushSubscriptions.removeAll { $0.endpoint == endpoint }
        }
        try await repository.setDeliveryAddresses(addresses, owner: user)
        return jsonResponse(addresses.json)
    }

    /// The user and channel of a signed unsubscribe link; a 400 for a
    /// link that was cut or altered.
    private func unsubscribeTarget(_ request: Request) throws -> (String, DeliveryChannel) {
        let query = request.uri.queryParameters
        guard let user = query["user"].map(String.init), !user.isEmpty,
              let channel = query["channel"].flatMap({ DeliveryChannel(rawValue: String($0)) }),
              let token = query["token"].map(String.init),
              unsubscribeLinks.verify(owner: user, channel: channel, token: token) else {
            throw APIError.badRequest("this unsubscribe link is incomplete or altered; use the whole link from the email")
        }
        return (user, channel)
    }

    /// `GET /v1/unsubscribe?user=&channel=&token=`: a page whose button
    /// confirms. A GET changes nothing, since mail scanners follow links.
    private func unsubscribePage(_ request: Request) throws -> Response {
        let (_, channel) = try unsubscribeTarget(request)
        let action = "/v1/unsubscribe?" + (request.uri.query ?? "")
        let page = UnsubscribePage.html(
            message: "Stop \(channel.rawValue) notifications?",
            form: #"<form method="post" action="\#(UnsubscribePage.escaped(action))"><button type="submit">Unsubscribe</button></form>"#)
        return Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: page)))
    }

    /// `POST /v1/unsubscribe?user=&channel=&token=`: the page's button, or a
    /// mail client's one-click `List-Unsubscribe=One-Click` (RFC 8058).
    /// Mutes the channel in the user's preferences; repeating it is harmless.
    private func unsubscribe(_ request: Request) async throws -> Response {
        let (user, channel) = try unsubscribeTarget(request)
        var preferences = try await repository.preferences(owner: user)
        if !preferences.mutedChannels.contains(channel) {
            preferences.mutedChannels.insert(channel)
            try await repository.setPreferences(preferences, owner: user)
            logger.info("unsubscribed by link", metadata: ["user": .string(user), "channel": .string(channel.rawValue)])
        }
        let page = UnsubscribePage.html(message: "You will get no more \(channel.rawValue) notifications. You can turn them back on in the app's settings.", form: "")
        return Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: page)))
    }

    /// `whsec_` and 32 random bytes, base64url.
    @Sendable static func webhookSecret() -> String {
        var generator = SystemRandomNumberGenerator()
        return "whsec_" + Base64URL.encode((0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) })
    }

    /// `GET /v1/notifications?limit=&before=`
    private func listFeed(_ request: Request, user: String) async throws -> Response {
        let (limit, before) = try pageParameters(request)
        let page = try await repository.feed(owner: user, limit: limit, before: before)
        hub.noteActors(page.items.flatMap(\.actorIDs), for: user)
        var json = JSONWriterBridge()
        json.feed(page, unread: try await repository.unreadCount(owner: user))
        return jsonResponse(json.bytes)
    }

    /// `POST /v1/notifications/read` with `{"ids":[…]}` or `{"all":true}`.
    private func markRead(_ request: Request, user: String) async throws -> Response {
        let body = try await request.body.collect(upTo: 64 * 1024)
        guard case .object(let object)? = try? JSONParser.parse(Array(body.readableBytesView)) else {
            throw APIError.badRequest(#"the body must be a JSON object: {"ids":[…]} or {"all":true}"#)
        }
        let changed: [String]
        switch (object["ids"], object["all"]) {
        case (.array(let values)?, nil):
            guard !values.isEmpty, values.count <= 1_000 else { throw APIError.badRequest("ids must hold 1 to 1000 notification ids") }
            let ids = try values.map { value -> String in
                guard case .string(let id) = value, NotificationIDGenerator.isValid(id) else {
                    throw APIError.badRequest("ids must be notification ids")
                }
                return id
            }
            changed = try await repository.markRead(owner: user, ids: ids)
        case (nil, .bool(true)?):
            changed = try await repository.markAllRead(owner: user)
        default:
            throw APIError.badRequest(#"send either {"ids":[…]} or {"all":true}"#)
        }
        if !changed.isEmpty {
            let message = OutboundMessage.read(ids: changed, owner: user, prefix: configuration.userSubjectPrefix)
            do {
                try connection.publish(message.subject, payload: message.body)
            } catch {
                logger.warning("publishing notification.read failed; other tabs see it on their next reload", metadata: [
                    "user": .string(user), "error": .string(error.description),
                ])
            }
        }
        var json = JSONWriterBridge()
        json.count("updated", Int64(changed.count))
        return jsonResponse(json.bytes)
    }

    // MARK: WebSocket

    /// Whether a request head may upgrade to a WebSocket: `/ws`, an allowed
    /// origin, a valid token. Called on the connection's event loop; a
    /// refused upgrade is answered by the `/ws` route.
    func webSocketGrant(_ head: HTTPRequestHead) -> WebSocketGrant? {
        let uri = URI(head.uri)
        guard uri.path == "/ws" else { return nil }
        if let origin = head.headers.first(name: "origin"), !configuration.allows(origin: origin) { return nil }
        let token = bearerToken(authorization: head.headers.first(name: "authorization"), query: uri.query) ?? ""
        // Failures are counted when the /ws route answers the refused request.
        guard case .success(let verified) = verifier.verify(token, now: unixNow()) else { return nil }
        return WebSocketGrant(token: verified, since: uri.queryParameters["since"].map(String.init))
    }

    private func upgradeRefusal(authorization: String?, query: String?, origin: String?) -> APIError? {
        if let origin, !configuration.allows(origin: origin) {
            return APIError(.forbidden, code: "origin_not_allowed", message: "origin \(origin) may not open a WebSocket here")
        }
        let token = bearerToken(authorization: authorization, query: query) ?? ""
        if case .failure(let failure) = verifier.verify(token, now: unixNow()) {
            metrics.authFailed(failure)
            return .unauthorized(failure)
        }
        return nil
    }

    /// Runs in the connection's task right after the 101: attaches the
    /// outbox to the hub, reads `hello` and the replay from the store, and
    /// hands them to the session. The task ends here; the WebSocket lives on
    /// in its channel.
    func openWebSocket(_ outbox: WebSocketOutbox, grant: WebSocketGrant) async {
        let user = grant.token.user
        let opening: WebSocketOpening
        do {
            let feed = try await LiveFeed.open(
                user: user, since: grant.since, sink: outbox, hub: hub, repository: repository, configuration: configuration)
            opening = .opened(feed)
        } catch is TooManyConnections {
            opening = .refused(.policyViolation, reason: "too many connections for this user")
        } catch {
            logger.error("opening a WebSocket feed failed", metadata: ["user": .string(user), "error": .string("\(error)")])
            opening = .refused(.unexpectedServerError, reason: "the feed is unavailable; retry later")
        }
        if await !outbox.deliver(opening), case .opened(let feed) = opening {
            // The client left while the feed was opening.
            feed.close(hub: hub)
        }
    }

    /// Joins `room` for a WebSocket: subscribes (confirmed by the
    /// server), reads the replay after `since`, and hands both to the
    /// session, which sends the replay and `joined`.
    func joinRoom(_ room: Room, since: String?, outbox: WebSocketOutbox) async {
        var join: RoomJoin
        do {
            try await hub.join(room: room, sink: outbox)
            do {
                if let since {
                    let replay = try await LiveFeed<WebSocketOutbox>.replay(owner: room.owner, after: since, repository: repository, configuration: configuration)
                    join = .joined(replay ?? [], reset: replay == nil)
                } else {
                    join = .joined([], reset: false)
                }
            } catch {
                logger.error("reading a room's replay failed", metadata: ["room": .string(room.name), "error": .string("\(error)")])
                join = .failed("the history of \(room.name) is unavailable; join again later")
            }
        } catch {
            logger.error("subscribing to a room failed", metadata: ["room": .string(room.name), "error": .string("\(error)")])
            join = .failed("\(room.name) cannot be joined now; join again later")
        }
        if await !outbox.deliver(join, room: room) {
            hub.leave(room: room, sink: outbox)
        }
    }

    /// A WebSocket's feed went live (on its event loop).
    func webSocketOpened(_ feed: LiveFeed<WebSocketOutbox>, expiresAt: Int64) {
        expiry.add(feed.sink, expiresAt: expiresAt)
        metrics.webSockets(open.webSockets.add(1, ordering: .relaxed).newValue)
    }

    /// A live WebSocket's channel closed (on its event loop).
    func webSocketEnded(_ feed: LiveFeed<WebSocketOutbox>, expiresAt: Int64) {
        expiry.remove(feed.sink, expiresAt: expiresAt)
        feed.close(hub: hub)
        metrics.webSockets(open.webSockets.subtract(1, ordering: .relaxed).newValue)
    }

    // MARK: Server-Sent Events

    /// `GET /v1/notifications/stream?rooms=channel:<id>,global`: the same
    /// events as the WebSocket, and the rooms'. `id:` is the notification
    /// id (with rooms, `<user cursor>~<rooms cursor>`), so `Last-Event-ID`
    /// resumes both.
    private func eventStream(_ request: Request, token: VerifiedToken) async throws -> Response {
        // Browsers send `Last-Event-ID` when an EventSource reconnects.
        let cursor = request.headers[.init("Last-Event-ID")!] ?? request.uri.queryParameters["since"].map(String.init)
        var rooms: [Room] = []
        if let list = request.uri.queryParameters["rooms"], !list.isEmpty {
            for text in list.split(separator: ",") {
                if case .room(let room) = try roomName(String(text), user: token.user), !rooms.contains(room) { rooms.append(room) }
            }
            guard rooms.count <= configuration.maxRoomsPerConnection else {
                throw APIError.badRequest("a stream joins at most \(configuration.maxRoomsPerConnection) rooms")
            }
        }
        let start = EventStreamCursor(cursor, withRooms: !rooms.isEmpty)
        let opened: LiveFeed<ClientQueue>
        do {
            opened = try await LiveFeed.open(
                user: token.user, since: start.user, rooms: rooms, roomsSince: start.rooms,
                sink: ClientQueue(limit: configuration.clientQueueLimit),
                hub: hub, repository: repository, configuration: configuration)
        } catch is TooManyConnections {
            throw APIError(.tooManyRequests, code: "too_many_connections", message: "too many connections for this user")
        }
        let queue = opened.sink
        let heartbeat = Duration.seconds(15)
        expiry.add(queue, expiresAt: token.expiresAt)
        return Response(
            status: .ok,
            headers: [.contentType: "text/event-stream", .cacheControl: "no-cache", .init("X-Accel-Buffering")!: "no"],
            body: ResponseBody { [self] writer in
                var feed = opened
                var position = start
                metrics.eventStreams(open.eventStreams.add(1, ordering: .relaxed).newValue)
                let heartbeats = Task {
                    // Heartbeats keep proxies from closing the stream and
                    // reveal dead clients.
                    while !Task.isCancelled {
                        try? await Task.sleep(for: heartbeat)
                        queue.push([])
                    }
                }
                do {
                    try await withGracefulShutdownHandler {
                        try await request.body.consumeWithInboundCloseHandler { _ in
                            for frame in feed.takeOpening() { try await writer.write(Self.event(frame, id: position.advance(past: frame))) }
                            streaming: while true {
                                switch await queue.next() {
                                case .frames(let frames):
                                    for frame in frames where feed.admit(frame) {
                                        try await writer.write(frame.isEmpty ? ByteBuffer(string: ": ping\n\n") : Self.event(frame, id: position.advance(past: frame)))
                                    }
                                case .overflow:
                                    try await writer.write(ByteBuffer(string: ": client too slow; reconnect with Last-Event-ID\n\n"))
                                    break streaming
                                case .closed(.resume):
                                    try await writer.write(ByteBuffer(string: ": NATS reconnected; reconnect with Last-Event-ID\n\n"))
                                    break streaming
                                case .closed:
                                    break streaming
                                }
                            }
                        } onInboundClosed: {
                            queue.close(.clientGone)
                        }
                    } onGracefulShutdown: {
                        queue.close(.shutdown)
                    }
                } catch {
                    // The client went away mid-write.
                }
                heartbeats.cancel()
                expiry.remove(queue, expiresAt: token.expiresAt)
                feed.close(hub: hub)
                metrics.eventStreams(open.eventStreams.subtract(1, ordering: .relaxed).newValue)
                try await writer.finish(nil)
            })
    }

    /// One SSE event: `id:` (for created notifications), then `data:`.
    static func event(_ frame: [UInt8], id: String?) -> ByteBuffer {
        var buffer = ByteBuffer()
        if let id {
            buffer.writeString("id: \(id)\n")
        }
        buffer.writeString("data: ")
        buffer.writeBytes(frame)
        buffer.writeString("\n\n")
        return buffer
    }

    /// Live connections, for the drain at shutdown.
    var openConnections: Int {
        open.webSockets.load(ordering: .relaxed) + open.eventStreams.load(ordering: .relaxed)
    }
}

/// What an SSE stream's `Last-Event-ID` resumes from: the last
/// notification id it sent, or with rooms `<user's>~<rooms'>` (either may
/// be empty). Only created notifications carry an `id:`.
struct EventStreamCursor {
    /// The user's `since`.
    private(set) var user: String?
    /// The rooms' `since`.
    private(set) var rooms: String?
    let withRooms: Bool

    init(_ text: String?, withRooms: Bool) {
        self.withRooms = withRooms
        guard let text, !text.isEmpty else { return }
        guard let tilde = text.firstIndex(of: "~") else {
            user = text
            return
        }
        let (user, rooms) = (String(text[..<tilde]), String(text[text.index(after: tilde)...]))
        self.user = user.isEmpty ? nil : user
        self.rooms = rooms.isEmpty ? nil : rooms
    }

    /// Moves past `frame`; the `id:` it carries, if any.
    mutating func advance(past frame: [UInt8]) -> String? {
        if let id = createdNotificationID(frame) {
            user = id
        } else if frame.starts(with: roomCreatedPrefix), let (_, id) = roomNotificationID(frame) {
            rooms = id
        } else {
            return nil
        }
        return withRooms ? (user ?? "") + "~" + (rooms ?? "") : user
    }
}

/// Runs first at shutdown (it is listed after the HTTP server): closes every
/// WebSocket with 1001 and ends every SSE stream, then waits for them to go.
struct DrainService: Service {
    let gateway: Gateway

    func run() async throws {
        try? await gracefulShutdown()
        gateway.hub.closeAll()
        let deadline = ContinuousClock.now + .seconds(5)
        while gateway.openConnections > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
}
