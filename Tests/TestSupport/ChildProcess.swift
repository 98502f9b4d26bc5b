public import Foundation
import Glibc

/// A child process started with `posix_spawn`, its output sent to a file.
/// Identified by its PID, so it can be signalled from any task.
public struct ChildProcess: Sendable {
    public let pid: pid_t
    public let outputPath: String

    /// Starts `executable` (a path, or a name looked up in `PATH`).
    public static func spawn(
        _ executable: String,
        arguments: [String],
        environment: [String: String] = ProcessInfo.processInfo.environment,
        outputPath: String
    ) throws -> ChildProcess {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = posix_spawnp(&pid, executable, &actions, nil, argv, envp)
        guard rc == 0 else {
            throw ChildProcessError(message: "cannot start \(executable): \(String(cString: strerror(rc)))")
        }
        return ChildProcess(pid: pid, outputPath: outputPath)
    }

    /// Sends `signal` to the process.
    public func signal(_ signal: Int32) {
        Glibc.kill(pid, signal)
    }

    /// Waits for the process to end; its exit status, or 128 + signal.
    @discardableResult
    public func wait(timeout: Duration = .seconds(30)) async throws -> Int32 {
        let deadline = ContinuousClock.now + timeout
        while true {
            var status: Int32 = 0
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid {
                let signalled = status & 0x7F
                return signalled == 0 ? (status >> 8) & 0xFF : 128 + signalled
            }
            if result < 0 { throw ChildProcessError(message: "waitpid(\(pid)) failed: \(String(cString: strerror(errno)))") }
            if ContinuousClock.now >= deadline {
                throw ChildProcessError(message: "process \(pid) did not exit within \(timeout); output:\n\(output)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// SIGKILLs and reaps the process, ignoring errors (for clean-up).
    public func kill() async {
        signal(SIGKILL)
        _ = try? await wait(timeout: .seconds(10))
    }

    /// Everything the process has written so far.
    public var output: String {
        (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
    }

    /// Waits until the output contains `text`.
    public func waitForOutput(containing text: String, timeout: Duration = .seconds(20)) async throws {
        let deadline = ContinuousClock.now + timeout
        while !output.contains(text) {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                throw ChildProcessError(message: "process \(pid) exited before writing '\(text)'; output:\n\(output)")
            }
            if ContinuousClock.now >= deadline {
                throw ChildProcessError(message: "process \(pid) did not write '\(text)' within \(timeout); output:\n\(output)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}

/// A child process did not start or behave as expected.
public struct ChildProcessError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}
