public import KeyValueStore

/// Delivery beyond the app: a user's addresses and what happened to each
/// channel's delivery of a notification.
///
/// | partition   | sort key | item                                   |
/// |-------------|----------|----------------------------------------|
/// | `U#<owner>` | `D`      | the owner's ``DeliveryAddresses``      |
extension NotificationRepository {
    static func addressesKey(_ owner: String) -> ItemKey { ItemKey(partition: partition(owner), sort: "D") }

    /// Where `owner` can be reached outside the app (none by default).
    public func deliveryAddresses(owner: String) async throws(KeyValueStoreError) -> DeliveryAddresses {
        guard let item = try await store.getItem(Self.addressesKey(owner), consistentRead: true) else { return DeliveryAddresses() }
        return DeliveryAddresses(attributes: item.attributes)
    }

    /// Replaces `owner`'s addresses.
    public func setDeliveryAddresses(_ addresses: DeliveryAddresses, owner: String) async throws(KeyValueStoreError) {
        let key = Self.addressesKey(owner)
        if addresses == DeliveryAddresses() {
            try await store.deleteItem(key)
        } else {
            try await store.putItem(Item(key: key, attributes: addresses.attributes))
        }
    }

    /// Drops the push subscription at `endpoint` from `owner`'s addresses:
    /// the push service said it is gone (404 or 410).
    public func removePushSubscription(endpoint: String, owner: String) async throws(KeyValueStoreError) {
        var addresses = try await deliveryAddresses(owner: owner)
        let before = addresses.pushSubscriptions.count
        addresses.pushSubscriptions.removeAll { $0.endpoint == endpoint }
        guard addresses.pushSubscriptions.count != before else { return }
        try await setDeliveryAddresses(addresses, owner: owner)
    }

    /// The owner's addresses and preferences, read together.
    public func deliveryTargets(owner: String) async throws(KeyValueStoreError) -> (DeliveryAddresses, Preferences) {
        let keys = [Self.addressesKey(owner), Self.preferencesKey(owner)]
        let items = try await store.batchGetItems(keys, consistentRead: true)
        return (items[keys[0]].map { DeliveryAddresses(attributes: $0.attributes) } ?? DeliveryAddresses(),
                items[keys[1]].map { Preferences(attributes: $0.attributes) } ?? Preferences())
    }

    /// One live notification of `owner`, as clients see it; `nil` once it
    /// was retracted, expired, or folded into a group under a new id.
    public func notification(owner: String, id: String) async throws(KeyValueStoreError) -> NotificationRecord? {
        guard let item = try await store.getItem(Self.notificationKey(owner, id), consistentRead: true) else { return nil }
        guard let record = NotificationRecord(attributes: item.attributes) else {
            throw KeyValueStoreError(code: .corrupt, message: "notification item \(item.key) cannot be read")
        }
        return try await enrich([record])[0]
    }

    /// Stores how `delivery.channel` went on the notification; `false`
    /// when the notification is gone (nothing is written).
    @discardableResult
    public func recordDelivery(_ deliveries: [ChannelDelivery], owner: String, id: String) async throws(KeyValueStoreError) -> Bool {
        guard !deliveries.isEmpty else { return true }
        var set: [String: AttributeValue] = [:]
        for delivery in deliveries { set[ChannelDelivery.attributeName(delivery.channel)] = delivery.attribute }
        do {
            try await store.updateItem(Self.notificationKey(owner, id), Update(set: set), condition: .itemExists)
            return true
        } catch where error.isConditionFailure {
            return false
        }
    }
}
