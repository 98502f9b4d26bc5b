import KeyValueStore
import TestSupport
import Testing

/// The behaviour every ``KeyValueStore`` must have, run against each backend.
@Suite("KeyValueStore conformance")
struct ConformanceTests {
    static let key = ItemKey(partition: "p1", sort: "s1")

    // MARK: Items

    @Test(arguments: Backend.allCases)
    func putThenGetRoundTripsEveryAttributeType(backend: Backend) async throws {
        try await backend.withStore { (store) async throws in
            let attributes: [String: AttributeValue] = [
                "s": "héllo 🌍", "empty": .string(""), "i": .integer(-42), "big": .integer(.max), "small": .integer(.min),
                "d": .double(3.25), "t": true, "f": false, "b": .binary([0, 1, 255]), "n": .null,
                "l": .list(["a", 1, .list([])]), "m": .map(["x": 1, "y": .map(["z": "deep"])]),
            ]
            let item = Item(key: Self.key, attributes: attributes)
            let old = try await store.putItem(item)
            #expect(old == nil)
            #expect(try await store.getItem(Self.key) == item)
        }
    }

    @Test(arguments: Backend.allCases)
    func getOfAMissingItemIsNil(backend: Backend) async throws {
        try await backend.withStore { (store) async throws in
            #expect(try await store.getItem(Self.key) == nil)
        }
    }

    @Test(arguments: Backend.allCases)
    func putReplacesAndReturnsTheOldItem(backend: Backend) async throws {
        try await backend.withStore { (store) async throws in
            let first = Item(key: Self.key, attributes: ["v": 1, "only-first": true])
            let second = Item(key: Self.key, attributes: ["v": 2])
            try await store.putItem(first)
            let old = try await store.putItem(second)
            #expect(old == first)
            #expect(try await store.getItem(Self.key) == second)
        }
    }

    @Test(arguments: Backend.allCases)
    func keysCompareByBytesNotByCanonicalEquivalence(backend: Backend) async throws {
        try await backend.withStore { (store) async throws in
            let composed = ItemKey(partition: "p", sort: "\u{E9}")
            let decomposed = ItemKey(partition: "p", sort: "e\u{301}")
            try await store.putItem(Item(key: composed, attributes: ["form": "composed"]))
            try await store.putItem(Item(key: decomposed, attributes: ["form": "decomposed"]))
            #expect(try await store.getItem(composed)?["form"] == "composed")
            #expect(try await store.getItem(decomposed)?["form"] == "decomposed")
            let page = try await store.query(Query(partition: "p"))
            #expect(page.items.count == 2)
        }
    }

    @Test(arguments: Backend.allCases)
    func emptyKeysAreRejected(backend: Backend) async throws {
        try await backend.withStore { (store) async throws in
            await #expect(throws: KeyValueStoreError.self) {
                try await store.putItem(Item(key: ItemKey(partition: "", sort: "s")))
            }
            let error = await #expect(throws: KeyValueStoreError.self) {
                try await store.getItem(ItemKey(partition: "p", sort: ""))
            }
            #expect(error?.code == .validation)
        }
    }

    // MARK: Conditions

    @Test(arguments: Backend.allCases)
    func putIfNotExistsWritesOnceThenFailsWithoutChangingTheItem(backend: Backend) async throws {
        try await backend.withStore { (store) async throws in
            let first = Item(key: Self.key, attributes: ["v": 1])
            try await store.putItem(first, condition: .itemNotExists)
            let error = await #expect(throws: KeyValueStoreError.self) {
                try await store.putItem(Item(key: Self.key, attributes: ["v": 2]), condition: .itemNotExists)
            }
            #expect(error?.code == .conditionalCheckFailed)
            #expect(try await store.getItem(Self.key) == first)
        }
    }

    @Test(arguments: Backend.allCases)
    func conditionsOnAttributes(backend: Backend) async throws {
        try await backend.withStore { (store) async throws in
            try await store.putItem(Item(key: Self.key, attributes: ["state": "open", "n": 1]))
            // equals holds → write
            try await store.putItem(Item(key: Self.key, attributes: ["state": "closed", "n": 1]), condition: .equals("state", "open"))
            // equals fails
            await #expect(throws: KeyValueStoreError.self) {
                try await store.putItem(Item(key: Self.key, attributes: ["state": "x"]), condition: .equals("state", "open"))
            }
            // type matters: integer 1 is not string "1"
            await #expect(throws: KeyValueStoreError.self) {
                try await store.putItem(Item(key: Self.key, attributes: ["state": "x"]), condition: .equals("n", "1"))
            }
            // attribute exists / not exists, and
            try await store.putItem(Item(key: Self.key, attributes: ["state": "y", "n": 1]),
                                    condition: .and([.attributeExists("n"), .attributeNotExists("missing")]))
            await #expect(throws: KeyValueStoreError.self) {
                try await store.putItem(Item(key: Self.key, attributes: [:]), condition: .attributeNotExists("n"))
            }
            // attribute_not_exists holds on a missing item, attribute_exists does not
            let other = ItemKey(partition: "p1", sort: "other")
            try await store.putItem(Item(key: other), condition: .attributeNotExists("n"))
            await #expect(throws: KeyValueStoreError.self) {
                try await store.putItem(Item(key: ItemKey(partition: "p1", sort: "third")), condition: .attributeExists("n"))
            }
            #expect(try await store.getItem(Self.key)?["state"] == "y")
        }
    }

    @Test(arguments: Backend.allCases)
    func deleteReturnsTheOldItemAndHonoursItsCondition(backend: Backend) async throws {
        try await backend.withStore { (store) async throws in
            #expect(try await store.deleteItem(Self.key) == nil)
            let item = Item(key: Self.key, attributes: ["v": 1])
            try await store.putItem(item)
            let error = await #expect(throws: KeyValueStoreError.self) {
                try await store.deleteItem(Self.key, condition: .equals("v", 2))
            }
            #expect(error?.code == .conditionalCheckFailed)
            #expect(try await store.getItem(Self.key) == item)
            #expect(try await store.deleteItem(Self.key, condition: .equals("v", 1)) == item)
            #expect(try await store.getItem(Self.key) == nil)
            await #expect(throws: KeyValueStoreError.self) {
                try await store.deleteItem(Self.key, condition: .itemExists)
            }
        }
    }

    @Test(arguments: Backend.allCases)
    func updateSetsAddsRemovesAndCreates(backend: Backend) async throws {
        try await backend.withStore { (store) async throws in
            let created = try await store.updateItem(Self.key, Update(set: ["name": "a"], add: ["count": 2]))
            #expect(created == Item(key: Self.key, attributes: ["name": "a", "count": 2]))
            let updated = try await store.updateItem(Self.key, Update(add: ["count": -5], remove: ["name"]))
            #expect(updated == Item(key: Self.key, attributes: ["count": -3]))
            #expect(try await store.getItem(Self.key) == updated)

            let error = await #expect(throws: KeyValueStoreError.self) {
                try await store.updateItem(Self.key, Update(set: ["name": "b"]), condition: .attributeExists("name"))
            }
            #expect(error?.code == .conditionalCheckFailed)

            try await store.putItem(Item(key: Self.key, attributes: ["count": "not a number"]))
            let invalid = await #expect(throws: KeyValueStoreError.self) {
                try await store.updateItem(Self.key, Update(add: ["count": 1]))
            }
            #expect(invalid?.code == .validation)
            #expect(try await store.getItem(Self.key)?["count"] == "not a number")
        }
    }

    // MARK: Queries

    static func fill(_ store: any KeyValueStore, partition: String = "p", sortKeys: [String]) async throws {
        try await store.batchWriteItems(sortKeys.map { .put(Item(key: ItemKey(partition: partition, sort: $0), attributes: ["k": .string($0)])) })
    }

    static func sortKeys(_ page: QueryPage) -> [String] { page.items.map(\.key.sort) }

    @Test(arguments: Backend.allCases)
    func queryReadsOnePartitionInByteOrder(backend: Backend) async throws {
        try await backend.withStore { (store) async throws in
            try await Self.fill(store, sortKeys: ["b", "a", "Z", "é", "aa", "a\u{10FFFF}"])
            try await Self.fill(store, partition: "other", sortKeys: ["a", "c"])
            try await Self.fill(store, partition: "pp", sortKeys: ["a"])
            let forward = try await store.query(Query(partition: "p"))
            #expect(Self.sortKeys(forward) == ["Z", "a", "aa", "a\u{10FFFF}", "b", "é"])
            #expect(forward.lastEvaluatedKey == nil)
            #expect(forward.items.first?["k"] == "Z")
            let backward = try await store.query(Query(partition: "p", scanForward: false))
            #expect(Self.sortKeys(backward) == ["é", "b", "a\u{10FFFF}", "aa", "a", "Z"])
            #expect(try await store.query(Query(partition: "nobody")).items.isEmpty)
        }
    }

    static let sortCases: [(SortKeyCondition, [String])] = [
        (.equals("b"), ["b"]),
        (.beginsWith("a"), ["a", "a#1", "a#2", "ab", "a\u{10FFFF}x"]),
        (.beginsWith("a#"), ["a#1", "a#2"]),
        (.beginsWith("a\u{10FFFF}"), ["a\u{10FFFF}x"]),
        (.beginsWith("zz"), []),
        (.between("a#1", "ab"), ["a#1", "a#2", "ab"]),
        (.lessThan("a#2"), ["a", "a#1"]),
        (.lessThanOrEqual("a#2"), ["a", "a#1", "a#2"]),
        (.greaterThan("ab"), ["a\u{10FFFF}x", "b", "c"]),
        (.greaterThanOrEqual("ab"), ["ab", "a\u{10FFFF}x", "b", "c"]),
    ]

    @Test(arguments: Backend.allCases)
    func querySortKeyConditions(backend: Backend) async throws {
        try await backend.withStore { (store) async throws in
            try await Self.fill(store, sortKeys: ["a", "a#1", "a#2", "a\u{10FFFF}x", "ab", "b", "c"])
            for (condition, expected) in Self.sortCases {
                let forward = try await store.query(Query(partition: "p", sortKey: condition))
                #expect(Self.sortKeys(forward) == expected, "\(condition)")
                let backward = try await store.query(Query(partition: "p", sortKey: condition, scanForward: false))
                #expect(Self.sortKeys(backward) == expected.reversed(), "\(condition) backward")
            }
        }
    }

    @Test(arguments: Backend.allCases, [true, false])
    func queryPaginatesWithLastEvaluatedKey(backend: Backend, forward: Bool) async throws {
        try await backend.withStore { (store) async throws in
            let all = (0..<7).map { "n#\($0)" }
            try await Self.fill(store, sortKeys: all + ["other"])
            var seen: [String] = []
            var start: ItemKey?
            var pages = 0
            repeat {
                let page = try await store.query(Query(partition: "p", sortKey: .beginsWith("n#"), limit: 3, scanForward: forward, exclusiveStartKey: start))
                #expect(page.items.count <= 3)
                seen += Self.sortKeys(page)
                start = page.lastEvaluatedKey
                if page.items.count == 3 { #expect(start == page.items.last?.key) }
                pages += 1
            } while start != nil && pages < 10
            #expect(seen == (forward ? all : all.reversed()))
            #expect(pages == 3)
        }
    }

    @Test(arguments: Backend.allCases)
    func aPageThatEndsExactlyAtTheLimitStillHasALastEvaluatedKey(backend: Backend) async throws {
        try await backend.withStore { (store) async throws in
            try await Self.fill(store, sortKeys: ["a", "b"])
            let first = try await store.query(Query(partition: "p", limit: 2))
            #expect(first.lastEvaluatedKey == ItemKey(partition: "p", sort: "b"))
            let second = try await store.query(Query(partition: "p", limit: 2, exclusiveStartKey: first.lastEvaluatedKey))
            #expect(second.items.isEmpty)
            #expect(second.lastEvaluatedKey == nil)
        }
    }

    @Test(arguments: Backend.allCases)
    func invalidQueriesAreRejected(backend: Backend) async throws {
        try await backend.withStore { (store) async throws in
            for query in [
                Query(partition: "p", limit: 0),
                Query(partition: "p", exclusiveStartKey: ItemKey(partition: "q", sort: "a")),
                Query(partition: "p", sortKey: .between("b", "a")),
            ] {
                let error = await #expect(throws: KeyValueStoreError.self) { try await store.query(query) }
                #expect(error?.code == .validation)
            }
        }
    }

    // MARK: Transactions

    @Test(arguments: Backend.allCases)
    func transactionAppliesEveryActionTogether(backend: Backend) async throws {
        try await backend.withStore { (store) async throws in
            let a = ItemKey(partition: "p", sort: "a"), b = ItemKey(partition: "p", sort: "b")
            let c = ItemKey(partition: "p", sort: "c"), d = ItemKey(partition: "q", sort: "d")
            try await store.putItem(Item(key: b, attributes: ["v": 1]))
            try await store.putItem(Item(key: d, attributes: ["guard": true]))
            try await store.transactWriteItems([
                .put(Item(key: a, attributes: ["v": 10]), condition: .itemNotExists),
                .delete(b, condition: .equals("v", 1)),
                .update(c, Update(add: ["count": 3])),
                .conditionCheck(d, .attributeExists("guard")),
            ])
            #expect(try await store.getItem(a)?["v"] == 10)
            #expect(try await store.getItem(b) == nil)
            #expect(try await store.getItem(c)?["count"] == 3)
            #expect(try await store.getItem(d)?["guard"] == true)
        }
    }

    @Test(arguments: Backend.allCases)
    func aFailedConditionCancelsTheWholeTransactionAndSaysWhich(backend: Backend) async throws {
        try await backend.withStore { (store) async throws in
            let a = ItemKey(partition: "p", sort: "a"), b = ItemKey(partition: "p", sort: "b")
            let c = ItemKey(partition: "p", sort: "c"), d = ItemKey(partition: "p", sort: "d")
            try await store.putItem(Item(key: b, attributes: ["v": 1]))
            try await store.putItem(Item(key: d, attributes: ["v": 1]))
            let error = await #expect(throws: KeyValueStoreError.self) {
                try await store.transactWriteItems([
                    .put(Item(key: a, attributes: ["v": 10]), condition: .itemNotExists),
                    .put(Item(key: b, attributes: ["v": 2]), condition: .itemNotExists),
                    .update(c, Update(add: ["count": 1])),
                    .delete(d, condition: .equals("v", 99)),
                ])
            }
            #expect(error?.code == .transactionCanceled)
            #expect(error?.cancellationReasons == [.none, .conditionalCheckFailed, .none, .conditionalCheckFailed])
            #expect(error?.failedActionIndices == [1, 3])
            #expect(try await store.getItem(a) == nil)
            #expect(try await store.getItem(b)?["v"] == 1)
            #expect(try await store.getItem(c) == nil)
            #expect(try await store.getItem(d)?["v"] == 1)
        }
    }

    @Test(arguments: Backend.allCases)
    func aFailingUpdateRollsBackEarlierActions(backend: Backend) async throws {
        try await backend.withStore { (store) async throws in
            let a = ItemKey(partition: "p", sort: "a"), b = ItemKey(partition: "p", sort: "b")
            try await store.putItem(Item(key: b, attributes: ["count": "text"]))
            let error = await #expect(throws: KeyValueStoreError.self) {
                try await store.transactWriteItems([
                    .put(Item(key: a, attributes: ["v": 1])),
                    .update(b, Update(add: ["count": 1])),
                ])
            }
            #expect(error?.code == .validation)
            #expect(try await store.getItem(a) == nil)
        }
    }

    @Test(arguments: Backend.allCases)
    func aTransactionMayNotTouchAnItemTwiceOrBeEmpty(backend: Backend) async throws {
        try await backend.withStore { (store) async throws in
            let error = await #expect(throws: KeyValueStoreError.self) {
                try await store.transactWriteItems([
                    .put(Item(key: Self.key)),
                    .conditionCheck(Self.key, .itemNotExists),
                ])
            }
            #expect(error?.code == .validation)
            #expect(try await store.getItem(Self.key) == nil)
            await #expect(throws: KeyValueStoreError.self) { try await store.transactWriteItems([]) }
        }
    }

    // MARK: Read, plan, write

    @Test(arguments: Backend.allCases)
    func readAndWriteSeesWhatIsStoredAndWritesWhatThePlanDecides(backend: Backend) async throws {
        try await backend.withStore { (store) async throws in
            let counter = ItemKey(partition: "p", sort: "counter"), log = ItemKey(partition: "p", sort: "log")
            try await store.putItem(Item(key: counter, attributes: ["n": 41]))
            let seen = try await store.readAndWrite(prefetching: [counter, log]) { reader throws(KeyValueStoreError) in
                let found = try reader.items([counter, log])
                let old = found[counter]!
                let n = old["n"]!.integerValue! + 1
                return PlannedWrite(
                    actions: [
                        .put(Item(key: counter, attributes: ["n": .integer(n)]), condition: .matches(old)),
                        .put(Item(key: log, attributes: ["last": .integer(n)]), condition: .itemNotExists),
                    ],
                    result: found.count)
            }
            #expect(seen == 1)
            #expect(try await store.getItem(counter)?["n"] == 42)
            #expect(try await store.getItem(log)?["last"] == 42)
        }
    }

    @Test(arguments: Backend.allCases)
    func readAndWriteServesKeysThePlanReadsWithoutPrefetching(backend: Backend) async throws {
        try await backend.withStore { (store) async throws in
            let pointer = ItemKey(partition: "p", sort: "pointer"), target = ItemKey(partition: "p", sort: "target")
            try await store.putItem(Item(key: pointer, attributes: ["to": "target"]))
            try await store.putItem(Item(key: target, attributes: ["v": 7]))
            // The second read depends on the first, as a retraction's does.
            let value = try await store.readAndWrite(prefetching: [pointer]) { reader throws(KeyValueStoreError) in
                let next = try reader.items([pointer])[pointer]?["to"]?.stringValue
                let item = try next.flatMap { name throws(KeyValueStoreError) in
                    try reader.items([ItemKey(partition: "p", sort: name)]).values.first
                }
                return PlannedWrite(actions: item.map { [.delete($0.key, condition: .matches($0))] } ?? [], result: item?["v"])
            }
            #expect(value == 7)
            #expect(try await store.getItem(target) == nil)
            #expect(try await store.getItem(pointer) != nil)
        }
    }

    @Test(arguments: Backend.allCases)
    func readAndWriteWithAFailedConditionWritesNothing(backend: Backend) async throws {
        try await backend.withStore { (store) async throws in
            let a = ItemKey(partition: "p", sort: "a"), b = ItemKey(partition: "p", sort: "b")
            try await store.putItem(Item(key: b, attributes: ["v": 1]))
            let error = await #expect(throws: KeyValueStoreError.self) {
                try await store.readAndWrite(prefetching: []) { _ throws(KeyValueStoreError) in
                    PlannedWrite(actions: [
                        .put(Item(key: a, attributes: ["v": 1]), condition: .itemNotExists),
                        .put(Item(key: b, attributes: ["v": 2]), condition: .itemNotExists),
                    ], result: ())
                }
            }
            #expect(error?.code == .transactionCanceled)
            #expect(error?.failedActionIndices == [1])
            #expect(try await store.getItem(a) == nil)
            #expect(try await store.getItem(b)?["v"] == 1)
        }
    }

    @Test(arguments: Backend.allCases)
    func conditionsOnItemsThePlanReadHoldOrFailAsOnAnyOther(backend: Backend) async throws {
        try await backend.withStore { (store) async throws in
            let keys = ["a", "b", "c", "d", "e"].map { ItemKey(partition: "p", sort: $0) }
            try await store.putItem(Item(key: keys[0], attributes: ["v": 1]))
            try await store.putItem(Item(key: keys[1], attributes: ["v": 1]))
            try await store.putItem(Item(key: keys[2], attributes: ["v": 1]))
            // Every key read first; each condition below is wrong about what was read.
            let error = await #expect(throws: KeyValueStoreError.self) {
                try await store.readAndWrite(prefetching: keys) { reader throws(KeyValueStoreError) in
                    let read = try reader.items(keys)
                    return PlannedWrite(actions: [
                        .put(Item(key: keys[0], attributes: ["v": 2]), condition: .matches(Item(key: keys[0], attributes: ["v": 9]))),
                        .delete(keys[1], condition: .itemNotExists),
                        .conditionCheck(keys[2], .itemNotExists),
                        .put(Item(key: keys[3], attributes: ["v": 2]), condition: .matches(Item(key: keys[3], attributes: ["v": 1]))),
                        .put(Item(key: keys[4], attributes: ["v": 2]), condition: read[keys[4]].map { .matches($0) } ?? .itemNotExists),
                    ], result: ())
                }
            }
            #expect(error?.failedActionIndices == [0, 1, 2, 3])
            #expect(try await store.getItem(keys[0])?["v"] == 1)
            #expect(try await store.getItem(keys[4]) == nil)
            // Right about what was read: all of it is written.
            try await store.readAndWrite(prefetching: keys) { reader throws(KeyValueStoreError) in
                let read = try reader.items(keys)
                return PlannedWrite(actions: [
                    .put(Item(key: keys[0], attributes: ["v": 2]), condition: .matches(read[keys[0]]!)),
                    .delete(keys[1], condition: .matches(read[keys[1]]!)),
                    .conditionCheck(keys[2], .matches(read[keys[2]]!)),
                    .update(keys[3], Update(add: ["v": 5]), condition: .itemNotExists),
                    .put(Item(key: keys[4], attributes: ["v": 2]), condition: .itemNotExists),
                ], result: ())
            }
            #expect(try await store.getItem(keys[0])?["v"] == 2)
            #expect(try await store.getItem(keys[1]) == nil)
            #expect(try await store.getItem(keys[3])?["v"] == 5)
            #expect(try await store.getItem(keys[4])?["v"] == 2)
        }
    }

    @Test(arguments: Backend.allCases)
    func readAndWriteDoesNotSeeExpiredItemsAndMayWriteNothing(backend: Backend) async throws {
        let clock = ManualClock()
        try await backend.withStore(clock: clock) { (store) async throws in
            let short = ItemKey(partition: "p", sort: "short")
            try await store.putItem(Item(key: short, attributes: ["expires_at": .integer(clock.now + 10)]))
            clock.advance(by: 11)
            let found = try await store.readAndWrite(prefetching: [short]) { reader throws(KeyValueStoreError) in
                PlannedWrite(actions: [], result: try reader.items([short]).count)
            }
            #expect(found == 0)
            #expect(try await store.expiredItems(limit: 10).map(\.key) == [short])
        }
    }

    // MARK: Batches

    @Test(arguments: Backend.allCases)
    func batchWriteAndBatchGet(backend: Backend) async throws {
        try await backend.withStore { (store) async throws in
            let keys = (0..<50).map { ItemKey(partition: "p\($0 % 3)", sort: "s\($0)") }
            try await store.batchWriteItems(keys.map { .put(Item(key: $0, attributes: ["n": .string($0.sort)])) })
            try await store.batchWriteItems(keys.prefix(10).map { .delete($0) })
            let found = try await store.batchGetItems(keys + [ItemKey(partition: "none", sort: "x")])
            #expect(found.count == 40)
            #expect(Set(found.keys) == Set(keys.dropFirst(10)))
            #expect(found[keys[20]]?["n"] == "s20")
            #expect(try await store.batchGetItems([]).isEmpty)
        }
    }

    // MARK: TTL

    @Test(arguments: Backend.allCases)
    func expiredItemsAreInvisibleAndSwept(backend: Backend) async throws {
        let clock = ManualClock(1_000)
        try await backend.withStore(clock: clock) { (store) async throws in
            let short = ItemKey(partition: "p", sort: "short")
            let long = ItemKey(partition: "p", sort: "long")
            let forever = ItemKey(partition: "p", sort: "forever")
            try await store.putItem(Item(key: short, attributes: ["expires_at": 1_010]))
            try await store.putItem(Item(key: long, attributes: ["expires_at": 2_000]))
            try await store.putItem(Item(key: forever, attributes: ["v": 1]))
            #expect(try await store.getItem(short) != nil)

            clock.advance(by: 10)  // now == 1_010: expiry is inclusive
            #expect(try await store.getItem(short) == nil)
            #expect(try await store.batchGetItems([short, long]).keys.sorted() == [long])
            #expect(Self.sortKeys(try await store.query(Query(partition: "p"))) == ["forever", "long"])
            // An expired item counts as absent for conditions.
            await #expect(throws: KeyValueStoreError.self) {
                try await store.deleteItem(short, condition: .itemExists)
            }
            try await store.putItem(Item(key: short, attributes: ["expires_at": 1_500, "v": 2]), condition: .itemNotExists)
            #expect(try await store.getItem(short)?["v"] == 2)

            clock.advance(by: 1_000)  // both TTL items now expired
            try await store.transactWriteItems([.put(Item(key: long, attributes: ["v": 3]), condition: .itemNotExists)])
            #expect(try await store.getItem(long)?["v"] == 3)

            // Still stored, though no read sees it: the sweep's view.
            #expect(try await store.expiredItems(limit: 100) == [Item(key: short, attributes: ["expires_at": 1_500, "v": 2])])
            // `.expired` holds for the expired item only, and only once.
            await #expect(throws: KeyValueStoreError.self) {
                try await store.transactWriteItems([.delete(forever, condition: .expired)])
            }
            try await store.transactWriteItems([.delete(short, condition: .expired)])
            await #expect(throws: KeyValueStoreError.self) {
                try await store.transactWriteItems([.delete(short, condition: .expired)])
            }
            #expect(try await store.expiredItems(limit: 100).isEmpty)
            #expect(Self.sortKeys(try await store.query(Query(partition: "p"))) == ["forever", "long"])
        }
    }

    @Test(arguments: Backend.allCases)
    func expiredItemsComeLongestExpiredFirstUpToTheLimit(backend: Backend) async throws {
        let clock = ManualClock(1_000)
        try await backend.withStore(clock: clock) { (store) async throws in
            try await store.batchWriteItems((0..<5).map {
                .put(Item(key: ItemKey(partition: "p\($0 % 2)", sort: "\($0)"), attributes: ["expires_at": .integer(1_005 - Int64($0))]))
            })
            clock.advance(by: 4)  // 4, 3, 2 and 1 expired; 0 expires at 1_005
            let first = try await store.expiredItems(limit: 3)
            #expect(first.map(\.key.sort) == ["4", "3", "2"])
            // An expired item a write replaced is live again, and not listed.
            try await store.putItem(Item(key: ItemKey(partition: "p1", sort: "3"), attributes: ["v": 1]), condition: .itemNotExists)
            #expect(try await store.expiredItems(limit: 3).map(\.key.sort) == ["4", "2", "1"])
        }
    }
}
