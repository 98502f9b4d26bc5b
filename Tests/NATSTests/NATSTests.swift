import Foundation
import NATS
import Testing
import TestSupport

@Suite("NATS through nats.c", .serialized)
struct NATSTests {
    @Test func connectingToNothingFailsWithAClearError() async throws {
        let error = await #expect(throws: NATSError.self) {
            _ = try await NATSConnection.connect(NATSConnectionOptions(urls: ["nats://127.0.0.1:1"], connectTimeout: .milliseconds(500)))
        }
        #expect(error?.code == .connectionFailed)
        #expect(error?.description.contains("127.0.0.1:1") == true)
    }

    @Test func coreMessagesCarryPayloadAndHeaders() async throws {
        try await withNATSServer { server in
            let connection = try await NATSConnection.connect(NATSConnectionOptions(urls: [server.url]))
            #expect(connection.status == .connected)
            let subscription = try connection.subscribe("greetings.>")
            try await connection.flush()
            try connection.publish("greetings.hello", payload: Array("héllo".utf8), headers: ["Notify-Error": "invalid_json", "X-Twice": "1"])
            try connection.publish("greetings.plain", payload: [])
            var iterator = subscription.makeAsyncIterator()
            let first = try #require(await iterator.next())
            #expect(first.subject == "greetings.hello")
            #expect(first.payload == Array("héllo".utf8))
            #expect(first.headers["Notify-Error"] == "invalid_json")
            #expect(first.headers["X-Twice"] == "1")
            let second = try #require(await iterator.next())
            #expect(second.subject == "greetings.plain")
            #expect(second.payload.isEmpty)
            #expect(second.headers.isEmpty)
            subscription.unsubscribe()
            await connection.close()
        }
    }

    @Test func aQueueGroupDeliversEachMessageToOneMember() async throws {
        try await withNATSServer { server in
            let connection = try await NATSConnection.connect(NATSConnectionOptions(urls: [server.url]))
            let one = try connection.subscribe("work", queue: "workers")
            let two = try connection.subscribe("work", queue: "workers")
            try await connection.flush()
            for index in 0..<200 { try connection.publish("work", payload: Array("\(index)".utf8)) }
            try await connection.flush()
            // Read both members concurrently until all 200 arrived.
            let received = try await withThrowingTaskGroup(of: [String].self) { group in
                for subscription in [one, two] {
                    group.addTask {
                        var seen: [String] = []
                        for await message in subscription {
                            seen.append(String(decoding: message.payload, as: UTF8.self))
                        }
                        return seen
                    }
                }
                group.addTask {
                    try await Task.sleep(for: .seconds(1))
                    one.unsubscribe()
                    two.unsubscribe()
                    return []
                }
                var all: [String] = []
                for try await part in group { all += part }
                return all
            }
            #expect(one.droppedMessages == 0 && two.droppedMessages == 0)
            #expect(received.count == 200)
            #expect(Set(received).count == 200)
            await connection.close()
        }
    }

    @Test func theConnectionReconnectsAfterTheServerRestarts() async throws {
        let server = try await NATSServer.start()
        defer { server.directory.remove() }
        let connection = try await NATSConnection.connect(NATSConnectionOptions(urls: [server.url], minReconnectDelay: .milliseconds(20), maxReconnectDelay: .milliseconds(200)))
        var events = connection.events.makeAsyncIterator()
        let flushed = try connection.publishConfirmable { connection throws(NATSError) in try connection.publish("before.stop", payload: [1]) }
        try await connection.flush()
        #expect(connection.confirmation(of: flushed) == .confirmed)
        let unflushed = try connection.publishConfirmable { connection throws(NATSError) in try connection.publish("before.stop", payload: [2]) }
        #expect(connection.confirmation(of: unflushed) == .pending)
        await server.stop()
        #expect(await events.next() == .disconnected)
        #expect(connection.status != .connected)
        let restarted = try await NATSServer.restarted(server)
        guard case .reconnected(let url)? = await events.next() else {
            Issue.record("expected a reconnected event")
            await restarted.stop()
            return
        }
        #expect(url.contains(String(server.port)))
        #expect(connection.status == .connected)
        #expect(connection.reconnectCount == 1)
        // No flush came back on the old connection after the second publish:
        // it may have been lost with it, and stays so after later flushes.
        let after = try connection.publishConfirmable { connection throws(NATSError) in try connection.publish("after.restart", payload: [1]) }
        try await connection.flush()
        #expect(connection.confirmation(of: after) == .confirmed)
        #expect(connection.confirmation(of: unflushed) == .unknown)
        #expect(connection.confirmation(of: flushed) == .confirmed)
        await connection.close()
        await restarted.stop()
    }

    // MARK: JetStream

    static func setUp(_ server: NATSServer) async throws -> (NATSConnection, JetStream) {
        let connection = try await NATSConnection.connect(NATSConnectionOptions(urls: [server.url]))
        let jetStream = try JetStream(connection: connection)
        _ = try await jetStream.ensureStream(StreamConfiguration(name: "EVENTS", subjects: ["events.>"], storage: .memory))
        return (connection, jetStream)
    }

    @Test func ensureStreamCreatesOnceAndRefusesAStreamWithOtherSubjects() async throws {
        try await withNATSServer { server in
            let connection = try await NATSConnection.connect(NATSConnectionOptions(urls: [server.url]))
            let jetStream = try JetStream(connection: connection)
            #expect(try await jetStream.streamInfo("EVENTS") == nil)
            let first = try await jetStream.ensureStream(StreamConfiguration(name: "EVENTS", subjects: ["events.>"], maxAge: .seconds(3600)))
            #expect(first.created)
            #expect(first.info.subjects == ["events.>"])
            #expect(first.info.created > 0)
            let second = try await jetStream.ensureStream(StreamConfiguration(name: "EVENTS", subjects: ["events.>"]))
            #expect(!second.created)
            #expect(second.info.created == first.info.created)
            let error = await #expect(throws: NATSError.self) {
                _ = try await jetStream.ensureStream(StreamConfiguration(name: "EVENTS", subjects: ["other.>"]))
            }
            #expect(error?.description.contains("other.>") == true)
            await connection.close()
        }
    }

    @Test func publishReportsSequenceDuplicatesAndMissingStreams() async throws {
        try await withNATSServer { server in
            let (connection, jetStream) = try await Self.setUp(server)
            let first = try await jetStream.publish("events.a", payload: [1], messageID: "m-1")
            #expect(first.stream == "EVENTS")
            #expect(first.sequence == 1)
            #expect(!first.duplicate)
            let again = try await jetStream.publish("events.a", payload: [1], messageID: "m-1")
            #expect(again.duplicate)
            #expect(again.sequence == 1)
            let error = await #expect(throws: NATSError.self) {
                _ = try await jetStream.publish("nowhere.a", payload: [1])
            }
            #expect(error?.code == .noResponders)
            await connection.close()
        }
    }

    @Test func pullConsumerDeliversWithMetadataAndHonoursAckNakTerm() async throws {
        try await withNATSServer { server in
            let (connection, jetStream) = try await Self.setUp(server)
            try await jetStream.ensureConsumer(stream: "EVENTS", ConsumerConfiguration(durableName: "worker", filterSubject: "events.>", ackWait: .seconds(1)))
            let subscription = try await jetStream.pullSubscribe(stream: "EVENTS", consumer: "worker")
            for index in 1...3 {
                _ = try await jetStream.publish("events.n", payload: Array("\(index)".utf8), headers: ["Index": "\(index)"])
            }
            let batch = try await subscription.fetch(maxMessages: 10, maxWait: .seconds(2))
            #expect(batch.map { String(decoding: $0.payload, as: UTF8.self) } == ["1", "2", "3"])
            #expect(batch.map(\.metadata.streamSequence) == [1, 2, 3])
            #expect(batch.allSatisfy { $0.metadata.deliveryCount == 1 && $0.subject == "events.n" })
            #expect(batch[1].headers["Index"] == "2")
            try batch[0].ack()
            try batch[1].nak()
            try batch[2].term()
            #expect(batch.allSatisfy { $0.isSettled })

            let redelivered = try await subscription.fetch(maxMessages: 10, maxWait: .seconds(2))
            #expect(redelivered.map(\.metadata.streamSequence) == [2])
            #expect(redelivered.first?.metadata.deliveryCount == 2)
            try redelivered.first?.ack()
            let clock = ContinuousClock()
            let start = clock.now
            let nothing = try await subscription.fetch(maxMessages: 10, maxWait: .milliseconds(300))
            #expect(clock.now - start < .seconds(2))
            #expect(nothing.isEmpty)
            await connection.close()
        }
    }

    @Test func fetchReturnsAvailableMessagesAtOnceAndASingleLateOnePromptly() async throws {
        try await withNATSServer { server in
            let (connection, jetStream) = try await Self.setUp(server)
            try await jetStream.ensureConsumer(stream: "EVENTS", ConsumerConfiguration(durableName: "worker"))
            let subscription = try await jetStream.pullSubscribe(stream: "EVENTS", consumer: "worker")
            for _ in 0..<5 { _ = try await jetStream.publish("events.x", payload: [0]) }
            let clock = ContinuousClock()
            let start = clock.now
            let five = try await subscription.fetch(maxMessages: 256, maxWait: .seconds(5))
            #expect(five.count == 5)
            #expect(clock.now - start < .seconds(2))
            for message in five { try message.ack() }

            let publisher = Task {
                try await Task.sleep(for: .milliseconds(300))
                _ = try await jetStream.publish("events.late", payload: [1])
            }
            let waited = clock.now
            let late = try await subscription.fetch(maxMessages: 256, maxWait: .seconds(10))
            #expect(late.map(\.subject) == ["events.late"])
            #expect(clock.now - waited < .seconds(5))
            try await publisher.value
            for message in late { try message.ack() }
            await connection.close()
        }
    }

    @Test func closingASubscriptionKeepsTheDurableConsumerAndItsPosition() async throws {
        try await withNATSServer { server in
            let (connection, jetStream) = try await Self.setUp(server)
            try await jetStream.ensureConsumer(stream: "EVENTS", ConsumerConfiguration(durableName: "worker"))
            do {
                let subscription = try await jetStream.pullSubscribe(stream: "EVENTS", consumer: "worker")
                _ = try await jetStream.publish("events.a", payload: [1])
                for message in try await subscription.fetch(maxMessages: 10, maxWait: .seconds(2)) { try message.ack() }
                subscription.close()
            }
            _ = try await jetStream.publish("events.b", payload: [2])
            let info = try #require(try await jetStream.consumerInfo(stream: "EVENTS", name: "worker"))
            #expect(info.numPending == 1)
            let again = try await jetStream.pullSubscribe(stream: "EVENTS", consumer: "worker")
            let next = try await again.fetch(maxMessages: 10, maxWait: .seconds(2))
            #expect(next.map(\.subject) == ["events.b"])
            for message in next { try message.ack() }
            await connection.close()
        }
    }

    @Test func ensureConsumerUpdatesChangedSettingsButRefusesAnotherFilter() async throws {
        try await withNATSServer { server in
            let (connection, jetStream) = try await Self.setUp(server)
            let created = try await jetStream.ensureConsumer(stream: "EVENTS", ConsumerConfiguration(durableName: "worker", filterSubject: "events.>", ackWait: .seconds(30), maxDeliver: 5))
            #expect(created.ackWait == .seconds(30))
            let updated = try await jetStream.ensureConsumer(stream: "EVENTS", ConsumerConfiguration(durableName: "worker", filterSubject: "events.>", ackWait: .seconds(10), maxDeliver: 4, backoff: [.seconds(1), .seconds(5)]))
            #expect(updated.maxDeliver == 4)
            #expect(updated.backoff == [.seconds(1), .seconds(5)])
            let error = await #expect(throws: NATSError.self) {
                try await jetStream.ensureConsumer(stream: "EVENTS", ConsumerConfiguration(durableName: "worker", filterSubject: "events.other"))
            }
            #expect(error?.description.contains("filter") == true)
            await connection.close()
        }
    }

    @Test func asyncPublisherPublishesManyAndWaitsForEveryAck() async throws {
        try await withNATSServer { server in
            let (connection, jetStream) = try await Self.setUp(server)
            let publisher = try JetStreamAsyncPublisher(connection: connection)
            let messages = (0..<5_000).map { JetStreamAsyncPublisher.Message(subject: "events.bulk", payload: Array("\($0)".utf8)) }
            try await publisher.publish(messages)
            try await publisher.waitForAcks()
            #expect(publisher.failureCount == 0)
            #expect(try await jetStream.streamInfo("EVENTS")?.messages == 5_000)
            await connection.close()
        }
    }
}

extension NATSServer {
    static func restarted(_ server: NATSServer) async throws -> NATSServer {
        try await server.restarted()
    }
}
