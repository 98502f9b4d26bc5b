import Foundation

/// One row of the final table: the fault, what must hold under it, what
/// was measured, and whether it held.
struct Check: Sendable {
    let fault: String
    let mustHold: String
    let measured: String
    let passed: Bool
}

/// The checks of one scenario, all under the same fault description.
struct Checks: Sendable {
    let fault: String
    private(set) var rows: [Check] = []

    init(fault: String) {
        self.fault = fault
    }

    /// Adds a row and prints it as progress.
    mutating func add(_ mustHold: String, _ measured: String, _ passed: Bool) {
        rows.append(Check(fault: fault, mustHold: mustHold, measured: measured, passed: passed))
        progress("\(passed ? "PASS" : "FAIL"): \(mustHold) — \(measured)")
    }

    mutating func append(contentsOf checks: [Check]) {
        rows += checks
    }

    var passed: Bool { rows.allSatisfy(\.passed) }
}

/// The table printed at the end: fault | what must hold | measured | PASS/FAIL.
func renderTable(_ checks: [Check]) -> String {
    let header = ["fault", "what must hold", "what was measured", "result"]
    let rows = checks.map { [$0.fault, $0.mustHold, $0.measured, $0.passed ? "PASS" : "FAIL"] }
    var widths = header.map(\.count)
    for row in rows {
        for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) }
    }
    func line(_ cells: [String]) -> String {
        "| " + cells.enumerated().map { index, cell in cell.padding(toLength: widths[index], withPad: " ", startingAt: 0) }.joined(separator: " | ") + " |"
    }
    let rule = "|" + widths.map { String(repeating: "-", count: $0 + 2) }.joined(separator: "|") + "|"
    return ([line(header), rule] + rows.map(line)).joined(separator: "\n")
}

let suiteStart = ContinuousClock.now

/// A progress line on stderr, with the time since the suite started.
func progress(_ text: String) {
    let elapsed = ContinuousClock.now - suiteStart
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    FileHandle.standardError.write(Data(String(format: "chaos %6.1fs  ", seconds).appending(text).appending("\n").utf8))
}

/// Seconds as a `Double`.
func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

/// The value below which `fraction` of `values` fall (nearest rank).
func percentile(_ values: [Double], _ fraction: Double) -> Double {
    guard !values.isEmpty else { return 0 }
    let sorted = values.sorted()
    let rank = Int((Double(sorted.count) * fraction).rounded(.up)) - 1
    return sorted[min(max(rank, 0), sorted.count - 1)]
}

/// A few items of a collection for a message, with how many there are.
func sample(_ values: some Collection<String>, _ count: Int = 3) -> String {
    values.isEmpty ? "" : " e.g. " + values.sorted().prefix(count).joined(separator: ", ")
}

/// Something the suite itself could not do (not a failed check).
struct ChaosError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
