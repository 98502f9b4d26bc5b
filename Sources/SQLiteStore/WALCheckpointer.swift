import CSQLite
import Synchronization

/// When the writer's WAL is copied back into the database file.
///
/// SQLite's own autocheckpoint copies the WAL inside the commit that
/// crossed the threshold, so that commit (and every event waiting behind
/// it) pays for writing and syncing hundreds of pages. Instead:
///
/// - past ``backgroundPages``, a commit asks ``BackgroundCheckpointer`` to
///   copy what is in the WAL from its own connection, concurrently with
///   later commits;
/// - past ``inlinePages``, the committing writer waits while the
///   checkpointer copies the rest. The WAL starts over from its beginning
///   only after a checkpoint that no commit overtook, so this bounds its
///   size; by then the background has copied most frames.
///
/// Lives on the writer's thread; installed as the connection's WAL hook.
final class WALCheckpointPolicy {
    /// WAL frames after which the committing writer waits for a checkpoint.
    static let inlinePages = 8_192
    /// WAL frames after which a commit asks for a background checkpoint.
    static let backgroundPages = 1_000
    /// New WAL frames between two background checkpoints: each one syncs
    /// the database file, so a few frames are not worth one.
    static let backgroundStep = 256

    let background: BackgroundCheckpointer
    /// WAL frames when a background checkpoint was last asked for.
    private var requestedAt = 0

    init(background: BackgroundCheckpointer) {
        self.background = background
    }

    /// Called after every commit with the frames now in the WAL.
    func committed(frames: Int) {
        if frames < requestedAt { requestedAt = 0 }  // the WAL started over
        if frames >= Self.inlinePages {
            background.checkpointWaiting()
            requestedAt = 0
        } else if frames >= Self.backgroundPages, frames >= requestedAt + Self.backgroundStep {
            requestedAt = frames
            background.request()
        }
    }
}

/// Copies WAL frames into the database file from a connection of its own,
/// on its own queue, one checkpoint at a time. Checkpoints are passive:
/// they never wait for the writer or readers and copy what they can; like
/// SQLite's autocheckpoint, a failed one is retried after a later commit.
final class BackgroundCheckpointer: Sendable {
    private let queue: SQLiteQueue
    private let requested = Atomic<Bool>(false)

    init(queue: SQLiteQueue) {
        self.queue = queue
    }

    /// Starts a checkpoint unless one is already waiting to run.
    func request() {
        guard requested.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else { return }
        queue.submit { [self] connection in
            requested.store(false, ordering: .releasing)
            Self.checkpoint(connection)
        }
    }

    /// Checkpoints and returns when done, after any checkpoint in progress.
    /// Called on the writer's queue between commits, so no commit overtakes
    /// it and the WAL can start over.
    func checkpointWaiting() {
        queue.runBlocking(Self.checkpoint)
    }

    private static func checkpoint(_ connection: SQLiteConnection) {
        sqlite3_wal_checkpoint_v2(connection.db, nil, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
    }

    func close() async {
        await queue.close()
    }
}
