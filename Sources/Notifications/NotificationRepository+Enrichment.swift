public import KeyValueStore

/// Enrichment: actor profiles and resource previews that stay current.
///
/// | partition          | sort key    | item                                             |
/// |--------------------|-------------|--------------------------------------------------|
/// | `U#<user>`         | `PROFILE`   | the user's ``ActorProfile`` as an actor          |
/// | `RES#<type>#<id>`  | `RES`       | the resource's ``ResourcePreview`` (or its deletion) |
/// | `RES#<type>#<id>`  | `O#<owner>` | an owner with notifications about the resource   |
///
/// The worker writes a profile from every event that carries newer actor
/// fields and from `profile.updated`, and fills the events that omit them;
/// the resource items come from `resource.updated` and `.deleted`. Reads
/// (``enrich(_:)``) show every actor's current profile and every
/// resource's current preview, from one batch read per page.
extension NotificationRepository {
    static func profileKey(_ user: String) -> ItemKey { ItemKey(partition: partition(user), sort: "PROFILE") }
    static func resourcePartition(_ resource: ResourceReference) -> String { "RES#" + resource.type + "#" + resource.id }
    static func resourceKey(_ resource: ResourceReference) -> ItemKey { ItemKey(partition: resourcePartition(resource), sort: "RES") }
    static func resourceOwnerKey(_ resource: ResourceReference, owner: String) -> ItemKey {
        ItemKey(partition: resourcePartition(resource), sort: "O#" + owner)
    }

    /// Adds the keys a batch reads for enrichment: each event's actor
    /// profile and, for a creating one, its resource and the resource's
    /// owner entry; each update's profile or resource.
    func addEnrichmentKeys(_ events: [IncomingEvent], _ updates: [EnrichmentUpdate], to keys: inout Set<ItemKey>) {
        guard enrichment else { return }
        for incoming in events where !incoming.event.isSelfNotification {
            let event = incoming.event
            keys.insert(Self.profileKey(event.triggerUser))
            if event.kind.effect == .create {
                let resource = event.resource
                keys.insert(Self.resourceKey(resource))
                keys.insert(Self.resourceOwnerKey(resource, owner: event.owner))
            }
        }
        for update in updates {
            switch update {
            case .profile(let update): keys.insert(Self.profileKey(update.user))
            case .resource(let update): keys.insert(Self.resourceKey(update.resource))
            }
        }
    }

    /// The profile stored at `key` (``profileKey(_:)``) as the plan sees it now.
    func profile(at key: ItemKey, in plan: BatchPlan) -> ActorProfile? {
        plan.current(key).flatMap { ActorProfile(attributes: $0.attributes) }
    }

    /// The resource stored at `key` (``resourceKey(_:)``) as the plan sees it now.
    func preview(at key: ItemKey, in plan: BatchPlan) -> ResourcePreview? {
        plan.current(key).flatMap { ResourcePreview(attributes: $0.attributes) }
    }

    /// Plans `update`: written when at least as new as what is stored and
    /// different. Returns whether it was, and the outbox reference that
    /// announces it.
    func plan(_ update: EnrichmentUpdate, in plan: inout BatchPlan) -> (UpdateOutcome, OutboxReference?) {
        switch update {
        case .profile(let update):
            let key = Self.profileKey(update.user)
            if let stored = profile(at: key, in: plan), update.profile.updatedAt < stored.updatedAt || update.profile == stored {
                return (.stale, nil)
            }
            plan.set(key, Item(key: key, attributes: update.profile.attributes))
            return (.applied, OutboxReference(kind: .profile, owner: update.user, id: ""))
        case .resource(let update):
            let key = Self.resourceKey(update.resource)
            if let stored = preview(at: key, in: plan), update.preview.updatedAt < stored.updatedAt || update.preview == stored {
                return (.stale, nil)
            }
            var attributes = update.preview.attributes
            if update.preview.deleted, let retention {
                // A deletion is remembered as long as a notification about
                // the resource could be redelivered or scheduled.
                attributes[Self.expiryAttribute] = .integer(update.preview.updatedAt + retention.components.seconds + NotificationEvent.maxSchedule)
            }
            plan.set(key, Item(key: key, attributes: attributes))
            return (.applied, OutboxReference(kind: .resource, owner: update.resource.type, id: update.resource.id))
        }
    }

    /// Plans what `event` says of its actor (when newer than the profile),
    /// and returns the event with the actor's current fields, and the
    /// outbox reference announcing a change clients see.
    func planActor(of event: NotificationEvent, in plan: inout BatchPlan) -> (NotificationEvent, OutboxReference?) {
        guard enrichment else { return (event, nil) }
        let key = Self.profileKey(event.triggerUser)
        let stored = profile(at: key, in: plan)
        var current = stored
        var reference: OutboxReference?
        if let next = stored.map({ $0.updated(by: event) }) ?? ActorProfile(event: event) {
            plan.set(key, Item(key: key, attributes: next.attributes))
            current = next
            // A newer date alone changes nothing a client shows.
            if stored.map({ !$0.showsTheSame(as: next) }) ?? false {
                reference = OutboxReference(kind: .profile, owner: event.triggerUser, id: "")
            }
        }
        guard let current else { return (event, nil) }
        var filled = event
        (filled.username, filled.userPicture, filled.userBio) = (current.username, current.userPicture, current.userBio)
        return (filled, reference)
    }

    /// Whether a creating `event` is about a deleted resource; either way
    /// the transaction checks that the resource is as read, so a deletion
    /// committed meanwhile makes the batch plan again.
    func isAboutDeletedResource(_ event: NotificationEvent, in plan: inout BatchPlan) -> Bool {
        guard enrichment else { return false }
        let key = Self.resourceKey(event.resource)
        plan.check(key)
        return preview(at: key, in: plan)?.deleted == true
    }

    /// Notes that `owner` has a notification about the event's resource,
    /// so that deleting the resource finds it; renewed when a newer
    /// notification would outlive the entry.
    func planResourceOwner(_ event: NotificationEvent, now: Int64, in plan: inout BatchPlan) {
        guard enrichment else { return }
        let key = Self.resourceOwnerKey(event.resource, owner: event.owner)
        let stored = plan.current(key)
        guard let retention else {
            if stored == nil { plan.set(key, Item(key: key, attributes: ["owner": .string(event.owner)])) }
            return
        }
        let outlives = now / 1000 + retention.components.seconds + (aggregateWindow?.components.seconds ?? 0)
        if let stored, stored[Self.expiryAttribute]?.integerValue.map({ $0 >= outlives }) ?? true { return }
        // A day to spare: renewed at most daily.
        plan.set(key, Item(key: key, attributes: ["owner": .string(event.owner), Self.expiryAttribute: .integer(outlives + 86_400)]))
    }

    /// The message announcing a changed profile or resource, as planned.
    func announcement(_ reference: OutboxReference, in plan: BatchPlan) -> OutboundMessage? {
        announcement(reference, item: plan.current(Self.announcedKey(reference)))
    }

    /// The item a profile or resource reference announces.
    static func announcedKey(_ reference: OutboxReference) -> ItemKey {
        reference.kind == .profile
            ? profileKey(reference.owner) : resourceKey(ResourceReference(type: reference.owner, id: reference.id))
    }

    /// The message announcing `item`, the profile or resource `reference`
    /// names; `nil` when it is gone or is not one.
    func announcement(_ reference: OutboxReference, item: Item?) -> OutboundMessage? {
        guard let item else { return nil }
        switch reference.kind {
        case .profile:
            return ActorProfile(attributes: item.attributes).map {
                .profileUpdated(user: reference.owner, $0, subjects: subjects, pictures: pictures)
            }
        case .resource:
            let resource = ResourceReference(type: reference.owner, id: reference.id)
            return ResourcePreview(attributes: item.attributes).map { .resourceUpdated(resource, $0, subjects: subjects) }
        case .created, .deleted, .updated:
            return nil
        }
    }

    // MARK: Deleted resources

    /// Retractions of every live (or scheduled) notification about
    /// `resource`, for its owners: one per action-key pointer, applied
    /// like unlikes (a group loses the actor; its last actor deletes it).
    public func retractions(on resource: ResourceReference, at time: Int64) async throws(KeyValueStoreError) -> [IncomingEvent] {
        let partition = Self.resourcePartition(resource)
        var owners: [String] = []
        var start: ItemKey?
        repeat {
            let page = try await store.query(Query(partition: partition, sortKey: .beginsWith("O#"), limit: 1_000, exclusiveStartKey: start))
            owners += page.items.map { String($0.key.sort.dropFirst(2)) }
            start = page.lastEvaluatedKey
        } while start != nil
        let kinds = EventKind.all.filter { $0.effect == .create && $0.resourceType == resource.type }
        var retractions: [IncomingEvent] = []
        for owner in owners {
            for kind in kinds {
                let prefix = "A#\(kind.action)#\(resource.type)#\(resource.id)#"
                var start: ItemKey?
                repeat {
                    let page = try await store.query(Query(
                        partition: Self.partition(owner), sortKey: .beginsWith(prefix), limit: 1_000, exclusiveStartKey: start))
                    for item in page.items where item["id"] != nil || item["group"] != nil || item["scheduled"] != nil {
                        // The trigger user comes last and has no `#`: a longer
                        // resource id that begins with this one does.
                        let trigger = item.key.sort.dropFirst(prefix.count)
                        guard !trigger.contains("#") else { continue }
                        let event = NotificationEvent(
                            kind: EventKind(name: "resource.deleted", action: kind.action, resourceType: resource.type, effect: .retract),
                            owner: owner, triggerUser: String(trigger), username: nil, userPicture: nil, userBio: nil,
                            action: kind.action, resourceType: resource.type, resourceID: resource.id, excerpt: nil, createdAt: time,
                            eventID: nil)
                        retractions.append(IncomingEvent(event: event, idempotencyKey: nil))
                    }
                    start = page.lastEvaluatedKey
                } while start != nil
            }
        }
        return retractions
    }

    /// Forgets which owners had notifications about a deleted resource,
    /// once they are retracted.
    public func forgetOwners(of resource: ResourceReference) async throws(KeyValueStoreError) {
        let partition = Self.resourcePartition(resource)
        while true {
            let page = try await store.query(Query(partition: partition, sortKey: .beginsWith("O#"), limit: 100))
            guard !page.items.isEmpty else { return }
            try await store.batchWriteItems(page.items.map { .delete($0.key) })
        }
    }

    // MARK: Reading

    /// `records` as clients see them: each actor with their current
    /// profile, each resource's current title and excerpt, titles rendered
    /// again where that changed them, pictures as URLs. One batch read
    /// (less what ``cache`` holds).
    public func enrich(_ records: [NotificationRecord]) async throws(KeyValueStoreError) -> [NotificationRecord] {
        guard enrichment, !records.isEmpty else { return records.map(pictures.absolute) }
        var users = Set<String>()
        var resources = Set<ResourceReference>()
        for record in records {
            users.insert(record.triggerUser)
            for actor in record.group?.actors ?? [] { users.insert(actor.triggerUser) }
            resources.insert(record.resource)
        }
        let (profiles, previews) = try await current(users: users, resources: resources)
        return records.map { record in
            var record = record
            if record.show(profiles: profiles, preview: previews[record.resource]), record.title != nil {
                record = rendered(record)
            }
            return pictures.absolute(record)
        }
    }

    /// `actors` with their current profiles, pictures as URLs.
    public func enrich(_ actors: [GroupActor]) async throws(KeyValueStoreError) -> [GroupActor] {
        guard enrichment, !actors.isEmpty else { return actors.map(pictures.absolute) }
        let (profiles, _) = try await current(users: Set(actors.map(\.triggerUser)), resources: [])
        return actors.map { actor in
            var actor = actor
            if let profile = profiles[actor.triggerUser] { actor.show(profile) }
            return pictures.absolute(actor)
        }
    }

    /// The stored profiles of `users` and previews of `resources`: from
    /// the cache, the rest in one batch read (then cached).
    private func current(
        users: Set<String>, resources: Set<ResourceReference>
    ) async throws(KeyValueStoreError) -> ([String: ActorProfile], [ResourceReference: ResourcePreview]) {
        var keys = users.map(Self.profileKey) + resources.map(Self.resourceKey)
        var found = cache.lookUp(&keys)
        if !keys.isEmpty {
            let read = try await store.batchGetItems(keys, consistentRead: false)
            cache.store(keys.map { ($0, read[$0]) })
            for (key, item) in read { found[key] = item }
        }
        var profiles: [String: ActorProfile] = [:]
        for user in users {
            if let profile = found[Self.profileKey(user)].flatMap({ ActorProfile(attributes: $0.attributes) }) { profiles[user] = profile }
        }
        var previews: [ResourceReference: ResourcePreview] = [:]
        for resource in resources {
            if let preview = found[Self.resourceKey(resource)].flatMap({ ResourcePreview(attributes: $0.attributes) }) {
                previews[resource] = preview
            }
        }
        return (profiles, previews)
    }
}

extension ActorProfile {
    /// Whether both show the same fields (the dates aside).
    func showsTheSame(as other: ActorProfile) -> Bool {
        username == other.username && userPicture == other.userPicture && userBio == other.userBio && deleted == other.deleted
    }
}

extension NotificationEvent {
    /// The resource the event is about.
    public var resource: ResourceReference { ResourceReference(type: resourceType, id: resourceID) }
}

extension NotificationRecord {
    /// The resource the notification is about.
    public var resource: ResourceReference { ResourceReference(type: resourceType, id: resourceID) }

    /// Who the notification shows: its actor and its group's shown actors.
    public var actorIDs: [String] {
        [triggerUser] + (group?.actors.map(\.triggerUser) ?? [])
    }

    /// Shows each actor's profile (when stored) and the resource's
    /// preview; returns whether anything a template uses changed.
    mutating func show(profiles: [String: ActorProfile], preview: ResourcePreview?) -> Bool {
        let before = (username, userPicture, userBio, excerpt, group?.actors)
        if let profile = profiles[triggerUser] {
            (username, userPicture, userBio) = (profile.username, profile.userPicture, profile.userBio)
        }
        if var group {
            for index in group.actors.indices {
                if let profile = profiles[group.actors[index].triggerUser] { group.actors[index].show(profile) }
            }
            self.group = group
        }
        if let preview, !preview.deleted {
            resourceTitle = preview.title
            if let excerpt = preview.excerpt { self.excerpt = excerpt }
        }
        return before != (username, userPicture, userBio, excerpt, group?.actors)
    }
}

extension GroupActor {
    /// Shows `profile`'s fields.
    mutating func show(_ profile: ActorProfile) {
        (username, userPicture, userBio) = (profile.username, profile.userPicture, profile.userBio)
    }
}
