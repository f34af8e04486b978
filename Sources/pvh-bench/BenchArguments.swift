import Foundation

/// Why a benchmark could not run: bad arguments, or a missing or failing
/// peer (fio, the scratch file); one line for stderr.
struct BenchUsageError: Error, CustomStringConvertible {
    var description: String
}

/// A benchmark's command-line words, taken one at a time, with the
/// messages every `pvh-bench` subcommand gives for a missing or bad value.
struct BenchArguments {
    private var rest: ArraySlice<String>
    /// The subcommand's usage line, quoted in the messages.
    let usage: String

    init(_ arguments: [String], usage: String) {
        rest = arguments[...]
        self.usage = usage
    }

    /// The next word (an option), nil at the end.
    mutating func next() -> String? { rest.popFirst() }

    /// The value after `flag`.
    mutating func value(_ flag: String) throws(BenchUsageError) -> String {
        guard let v = rest.popFirst() else { throw BenchUsageError(description: "\(flag) needs a value (\(usage))") }
        return v
    }

    /// The value after `flag`, a positive integer.
    mutating func positive(_ flag: String) throws(BenchUsageError) -> Int {
        let v = try value(flag)
        guard let n = Int(v), n > 0 else {
            throw BenchUsageError(description: "\(flag): expected a positive integer, got '\(v)'")
        }
        return n
    }

    /// The value after `flag`, one of `names` (a `--case`).
    mutating func caseName(_ flag: String, from names: [String]) throws(BenchUsageError) -> String {
        let name = try value(flag)
        guard names.contains(name) else {
            throw BenchUsageError(description: "\(flag): no case '\(name)' (\(names.joined(separator: ", ")))")
        }
        return name
    }

    /// A word no option of the subcommand takes.
    func unknown(_ argument: String) -> BenchUsageError {
        BenchUsageError(description: "unknown argument '\(argument)' (\(usage))")
    }
}

/// A subcommand's `main`: `--help` (or `-h`) prints its usage; otherwise
/// `body` runs, and an error it throws is one line on stderr,
/// `pvh-bench NAME: ERROR`, and `failure` the exit status.
func benchSubcommand(_ name: String, usage: String, _ arguments: [String], failure: Int32, _ body: () throws -> Void) -> Int32 {
    if arguments.contains("--help") || arguments.contains("-h") {
        print(usage)
        return 0
    }
    do {
        try body()
        return 0
    } catch {
        FileHandle.standardError.write(Data("pvh-bench \(name): \(error)\n".utf8))
        return failure
    }
}

/// The median of `values` (the mean of the middle two for an even count), NaN for none.
func benchMedian(_ values: [Double]) -> Double {
    guard !values.isEmpty else { return .nan }
    let s = values.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}
