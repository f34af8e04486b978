import Foundation

/// Prometheus' text exposition format 0.0.4
/// (https://prometheus.io/docs/instrumenting/exposition_formats/), parsed
/// into families so that several processes' scrapes can be served as one:
/// the daemon's `/metrics` is its own registry's text plus each guest
/// process's, every guest series labelled with its `domain` and `domid`,
/// and one `# HELP` and one `# TYPE` per family however many guests have it
/// (the format allows each only once per family, and only before the
/// family's samples).
///
/// A guest's text comes from another process: it is parsed strictly
/// (a line that is not a comment, a blank, or a well-formed sample is an
/// error) and bounded by its caller, and whatever it holds is only
/// re-serialized, never interpreted further.
public struct Exposition: Sendable, Equatable {
    /// One sample line: name, labels in their order, and the rest of the
    /// line (the value and an optional timestamp), kept as text.
    public struct Sample: Sendable, Equatable {
        public var name: String
        public var labels: [Label]
        public var value: String

        public init(name: String, labels: [Label], value: String) {
            self.name = name
            self.labels = labels
            self.value = value
        }
    }

    public struct Label: Sendable, Equatable {
        public var name: String
        public var value: String
        public init(_ name: String, _ value: String) {
            self.name = name
            self.value = value
        }
    }

    /// A metric family: `# HELP`, `# TYPE`, its samples.
    public struct Family: Sendable, Equatable {
        public var name: String
        /// The help text, unescaped.
        public var help: String?
        /// `counter`, `gauge`, `histogram`, `summary`, `untyped`.
        public var type: String?
        public var samples: [Sample]
    }

    public enum ParseError: Error, Equatable, CustomStringConvertible {
        /// A line that is none of the format's (1-based line number).
        case malformed(line: Int, reason: String)

        public var description: String {
            switch self {
            case .malformed(let line, let reason): "line \(line): \(reason)"
            }
        }
    }

    /// The families in the order they first appeared.
    public private(set) var families: [Family] = []
    private var index: [String: Int] = [:]
    /// Series already present (name and labels): a second one is dropped
    /// when merging, so the output never holds a series twice.
    private var series: Set<String> = []

    public init() {}

    /// Parses `text` (UTF-8).
    public init(parsing text: String) throws(ParseError) {
        var current: Int?
        for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.hasSuffix("\r") ? raw.dropLast() : raw
            if line.allSatisfy({ $0 == " " || $0 == "\t" }) { continue }
            if line.hasPrefix("#") {
                let words = line.dropFirst().split(separator: " ", maxSplits: 2, omittingEmptySubsequences: true)
                guard words.count >= 2, words[0] == "HELP" || words[0] == "TYPE" else { continue }  // a plain comment
                let name = String(words[1])
                guard Self.isMetricName(name) else { throw .malformed(line: number + 1, reason: "bad metric name \(name)") }
                let family = family(named: name)
                if words[0] == "HELP" {
                    families[family].help = words.count > 2 ? Self.unescapeHelp(words[2]) : ""
                } else {
                    guard words.count > 2, ["counter", "gauge", "histogram", "summary", "untyped"].contains(words[2]) else {
                        throw .malformed(line: number + 1, reason: "bad type for \(name)")
                    }
                    families[family].type = String(words[2])
                }
                current = family
                continue
            }
            let sample: Sample
            do throws(ParseError) {
                sample = try Self.parseSample(line)
            } catch {
                guard case .malformed(_, let reason) = error else { throw error }
                throw .malformed(line: number + 1, reason: reason)
            }
            let owner: Int
            if let current, Self.belongs(sample.name, to: families[current]) {
                owner = current
            } else {
                owner = family(named: sample.name)
                current = owner
            }
            add(sample, to: owner)
        }
    }

    /// Every sample, family by family.
    public var samples: [Sample] { families.flatMap(\.samples) }

    /// A copy with `labels` on every sample: put first, replacing any label
    /// of the same name the sample had (a guest process's own `domain`
    /// and `domid` give way to the registry's).
    public func labelled(_ labels: [Label]) -> Exposition {
        let names = Set(labels.map(\.name))
        var out = Exposition()
        for family in families {
            let f = out.family(named: family.name)
            out.families[f].help = family.help
            out.families[f].type = family.type
            for var sample in family.samples {
                sample.labels = labels + sample.labels.filter { !names.contains($0.name) }
                out.add(sample, to: f)
            }
        }
        return out
    }

    /// Adds `other`'s families: a family already here keeps its help and
    /// type and takes the other's samples (a family whose type differs is
    /// left out, as a scrape could not hold both); a series already here is
    /// not added again.
    public mutating func merge(_ other: Exposition) {
        for family in other.families {
            let f = self.family(named: family.name)
            if families[f].type == nil { families[f].type = family.type }
            if families[f].help == nil { families[f].help = family.help }
            guard family.type == nil || families[f].type == family.type else { continue }
            for sample in family.samples { add(sample, to: f) }
        }
    }

    /// Adds one sample of `metric` (its family made with the metric's help
    /// and type if new): a value a process holds as a total already (the
    /// daemon's per-domain XenStore counts), not fed through the registry.
    public mutating func add(_ metric: PVHMetric, labels: [Label], value: UInt64) {
        let f = family(named: metric.rawValue)
        if families[f].help == nil { families[f].help = metric.help }
        if families[f].type == nil { families[f].type = metric.kind == .counter ? "counter" : "gauge" }
        add(Sample(name: metric.rawValue, labels: labels, value: String(value)), to: f)
    }

    /// The text: each family's `# HELP` and `# TYPE` once, then its samples.
    public var text: String {
        var out = ""
        for family in families where !family.samples.isEmpty {
            if let help = family.help { out += "# HELP \(family.name) \(Self.escapeHelp(help))\n" }
            if let type = family.type { out += "# TYPE \(family.name) \(type)\n" }
            for sample in family.samples {
                out += sample.name
                if !sample.labels.isEmpty {
                    out += "{" + sample.labels.map { "\($0.name)=\"\(Self.escapeLabel($0.value))\"" }.joined(separator: ",") + "}"
                }
                out += " \(sample.value)\n"
            }
        }
        return out
    }

    // MARK: Reading values

    /// The sum of the samples named `name` whose labels include `labels`
    /// (a value that is not a number counts 0).
    public func sum(_ name: String, where labels: [String: String] = [:]) -> Double {
        samples(named: name, where: labels).reduce(0) { total, sample in
            total + (Double(sample.value.split(separator: " ").first ?? "") ?? 0)
        }
    }

    /// How many different values `label` has among the samples named `name`.
    public func distinct(_ label: String, of name: String) -> Int {
        Set(samples(named: name).compactMap { $0.labels.first { $0.name == label }?.value }).count
    }

    private func samples(named name: String, where labels: [String: String] = [:]) -> [Sample] {
        guard let f = index[name] ?? families.firstIndex(where: { $0.samples.contains { $0.name == name } }) else { return [] }
        return families[f].samples.filter { sample in
            sample.name == name && labels.allSatisfy { want in sample.labels.contains { $0.name == want.key && $0.value == want.value } }
        }
    }

    // MARK: Parsing

    private mutating func family(named name: String) -> Int {
        if let i = index[name] { return i }
        families.append(Family(name: name, help: nil, type: nil, samples: []))
        index[name] = families.count - 1
        return families.count - 1
    }

    private mutating func add(_ sample: Sample, to family: Int) {
        let key = sample.name + "{" + sample.labels.map { "\($0.name)=\($0.value)" }.sorted().joined(separator: "\u{0}") + "}"
        guard series.insert(key).inserted else { return }
        families[family].samples.append(sample)
    }

    /// A sample of a histogram or summary is named with a suffix.
    static func belongs(_ name: String, to family: Family) -> Bool {
        if name == family.name { return true }
        guard family.type == "histogram" || family.type == "summary" else { return false }
        return ["_bucket", "_sum", "_count"].contains { name == family.name + $0 }
    }

    static func isMetricName(_ name: some StringProtocol) -> Bool {
        guard let first = name.unicodeScalars.first, first == "_" || first == ":" || isLetter(first) else { return false }
        return name.unicodeScalars.allSatisfy { $0 == "_" || $0 == ":" || isLetter($0) || ("0"..."9").contains($0) }
    }

    static func isLabelName(_ name: some StringProtocol) -> Bool {
        guard let first = name.unicodeScalars.first, first == "_" || isLetter(first) else { return false }
        return name.unicodeScalars.allSatisfy { $0 == "_" || isLetter($0) || ("0"..."9").contains($0) }
    }

    private static func isLetter(_ c: Unicode.Scalar) -> Bool { ("a"..."z").contains(c) || ("A"..."Z").contains(c) }

    /// `name{label="value",...} value [timestamp]`.
    static func parseSample(_ line: Substring) throws(ParseError) -> Sample {
        let chars = Array(line.unicodeScalars)
        var i = 0
        while i < chars.count, chars[i] != "{", chars[i] != " ", chars[i] != "\t" { i += 1 }
        let name = String(String.UnicodeScalarView(chars[0..<i]))
        guard isMetricName(name) else { throw .malformed(line: 0, reason: "bad metric name") }
        var labels: [Label] = []
        if i < chars.count, chars[i] == "{" {
            i += 1
            while true {
                while i < chars.count, chars[i] == " " { i += 1 }
                guard i < chars.count else { throw .malformed(line: 0, reason: "unterminated labels") }
                if chars[i] == "}" {
                    i += 1
                    break
                }
                let start = i
                while i < chars.count, chars[i] != "=", chars[i] != " " { i += 1 }
                let labelName = String(String.UnicodeScalarView(chars[start..<i]))
                guard isLabelName(labelName) else { throw .malformed(line: 0, reason: "bad label name") }
                while i < chars.count, chars[i] == " " { i += 1 }
                guard i + 1 < chars.count, chars[i] == "=", chars[i + 1] == "\"" else {
                    throw .malformed(line: 0, reason: "label \(labelName) has no quoted value")
                }
                i += 2
                var value = String.UnicodeScalarView()
                var closed = false
                while i < chars.count {
                    let c = chars[i]
                    i += 1
                    if c == "\"" {
                        closed = true
                        break
                    }
                    if c == "\\" {
                        guard i < chars.count else { break }
                        let escaped = chars[i]
                        i += 1
                        switch escaped {
                        case "n": value.append("\n")
                        case "\\": value.append("\\")
                        case "\"": value.append("\"")
                        default: throw .malformed(line: 0, reason: "bad escape in label \(labelName)")
                        }
                    } else {
                        value.append(c)
                    }
                }
                guard closed else { throw .malformed(line: 0, reason: "unterminated value of label \(labelName)") }
                labels.append(Label(labelName, String(value)))
                while i < chars.count, chars[i] == " " { i += 1 }
                if i < chars.count, chars[i] == "," { i += 1 }
            }
        }
        let rest = String(String.UnicodeScalarView(chars[i...])).split(separator: " ", omittingEmptySubsequences: true)
        guard (1...2).contains(rest.count), isValue(rest[0]), rest.count == 1 || Int64(rest[1]) != nil else {
            throw .malformed(line: 0, reason: "bad value")
        }
        return Sample(name: name, labels: labels, value: rest.joined(separator: " "))
    }

    static func isValue(_ text: Substring) -> Bool {
        ["NaN", "+Inf", "-Inf"].contains(text) || Double(text) != nil
    }

    static func unescapeHelp(_ text: Substring) -> String {
        var out = ""
        var escaping = false
        for c in text {
            if escaping {
                out.append(c == "n" ? "\n" : c)
                escaping = false
            } else if c == "\\" {
                escaping = true
            } else {
                out.append(c)
            }
        }
        return out
    }

    static func escapeHelp(_ text: String) -> String {
        text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n")
    }

    static func escapeLabel(_ text: String) -> String {
        escapeHelp(text).replacingOccurrences(of: "\"", with: "\\\"")
    }
}
