import Foundation
#if FUZZING
import CFuzzer
#endif

/// What libFuzzer calls with each input.
public typealias FuzzCallback = @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32

/// The fuzzer's main. Built with `-DFUZZING -sanitize=fuzzer` it hands the
/// command line to libFuzzer; built normally it replays every file under
/// the directories given, so a corpus also serves as a regression test.
public func fuzzerMain(_ callback: FuzzCallback) -> Never {
#if FUZZING
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, callback))
#else
    let directories = Array(CommandLine.arguments.dropFirst())
    guard !directories.isEmpty else {
        FileHandle.standardError.write(Data("usage: \(CommandLine.arguments[0]) CORPUS_DIRECTORY...\n".utf8))
        exit(2)
    }
    var count = 0
    for directory in directories {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for name in files.sorted() {
            guard let data = FileManager.default.contents(atPath: directory + "/" + name) else { continue }
            _ = data.withUnsafeBytes { bytes in callback(bytes.bindMemory(to: UInt8.self).baseAddress, bytes.count) }
            count += 1
        }
    }
    print("replayed \(count) inputs")
    exit(0)
#endif
}
