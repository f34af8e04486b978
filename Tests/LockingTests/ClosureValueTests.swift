import Foundation
import Testing

/// No `Lock` (or bare `Mutex`) in pvh's sources, tests or fuzz targets
/// holds a closure as its value (or a tuple or optional of one): use a
/// `CallbackSlot`, or keep the closures in a class and lock the reference.
///
/// Why: `withLock` hands its body the value `inout` through a generic
/// parameter, and a function value crossing that boundary is reabstracted
/// (converted to the generic `() -> @out ()` form and back). When the value
/// is the closure itself, the converted closure is what gets written back,
/// so each `withLock { $0 }` wraps it in two more thunks and every later
/// call walks the whole chain. Three times this reached a hot path: the PV
/// timers' change handler (a vCPU stack overflow after ~10^5 re-arms), the
/// net queue's reschedule closures (a context thread's stack, in
/// `pvh-bench net`) and the block queue's guest notifier (88 µs per event
/// after some 12,000 responses, a chain 23,854 frames deep, in `pvh-bench
/// block`). Arrays and dictionaries of closures are fine: their elements
/// are stored in the generic form already, and only the collection is
/// passed `inout`.
@Suite("Lock values")
struct ClosureValueTests {
    /// The package's directory.
    static var root: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
    }

    /// Where Swift code that takes locks lives.
    static let checked = ["Sources", "Tests", "Fuzz/Sources"]

    /// The generic argument of each `Lock<…>` and `Mutex<…>` on `line`
    /// (balanced angle brackets; the text between).
    static func lockArguments(_ line: Substring) -> [String] {
        var found: [String] = []
        var rest = line[...]
        while let start = [rest.range(of: "Lock<"), rest.range(of: "Mutex<")].compactMap({ $0 }).min(by: { $0.lowerBound < $1.lowerBound }) {
            var depth = 1
            var index = start.upperBound
            while index < rest.endIndex, depth > 0 {
                switch rest[index] {
                case "<": depth += 1
                case ">" where rest[rest.index(before: index)] != "-": depth -= 1
                default: break
                }
                index = rest.index(after: index)
            }
            found.append(String(rest[start.upperBound..<rest.index(before: index)]))
            rest = rest[index...]
        }
        return found
    }

    /// Whether a `Lock` value's type text is, or directly contains, a
    /// function type: an `->` outside any `[…]` (collection) brackets.
    static func holdsClosure(_ type: String) -> Bool {
        var depth = 0
        var previous: Character = " "
        for c in type {
            switch c {
            case "[": depth += 1
            case "]": depth -= 1
            case ">" where previous == "-" && depth == 0: return true
            default: break
            }
            previous = c
        }
        return false
    }

    @Test("the check itself: closures, optional closures and tuples holding one are found; collections of them and plain values are not")
    func recogniser() {
        let flagged = ["(@Sendable () -> Void)?", "() -> Void", "(tx: (() -> Void)?, rx: Int)", "((Int) throws -> Bool)?"]
        let allowed = ["[@Sendable () -> Void]", "[Int: @Sendable () -> Void]", "(port: EventChannelPort?, missed: Bool)",
                       "Reschedule?", "Result<Void, Error>?", "[String: [Int]]"]
        for t in flagged { #expect(Self.holdsClosure(t), "\(t)") }
        for t in allowed { #expect(!Self.holdsClosure(t), "\(t)") }
        #expect(Self.lockArguments("let a = Lock<(@Sendable () -> Void)?>(nil)") == ["(@Sendable () -> Void)?"])
        #expect(Self.lockArguments("let b = Lock<[Int: Set<Int>]>([:]); let c = Mutex<Int>(0)") == ["[Int: Set<Int>]", "Int"])
        #expect(Self.lockArguments("let d = Mutex<((Int) -> Void)?>(nil)").allSatisfy(Self.holdsClosure))
    }

    @Test("no Lock or Mutex in Sources, Tests or Fuzz/Sources holds a closure directly (it would grow a thunk per access)")
    func noClosureValues() throws {
        var checked = 0
        var offenders: [String] = []
        for directory in Self.checked {
            let base = Self.root.appendingPathComponent(directory)
            let files = try #require(FileManager.default.enumerator(at: base, includingPropertiesForKeys: nil))
            for case let url as URL in files where url.pathExtension == "swift" && url.lastPathComponent != "ClosureValueTests.swift" {
                let text = try String(contentsOf: url, encoding: .utf8)
                checked += 1
                for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                    guard !line.drop(while: { $0 == " " }).hasPrefix("//") else { continue }
                    for type in Self.lockArguments(line) where Self.holdsClosure(type) {
                        offenders.append("\(directory)/\(url.path.replacingOccurrences(of: base.path + "/", with: "")):\(number + 1): <\(type)>")
                    }
                }
            }
        }
        #expect(checked > 300, "the sources were found")
        #expect(offenders.isEmpty, "use a CallbackSlot, or keep the closure in a class and lock the reference: \(offenders.joined(separator: "; "))")
    }
}
