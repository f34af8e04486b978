import Foundation
import Testing

/// contrib/: the systemd units and the Nomad job, checked as far as this
/// host allows without systemd running them or a Nomad agent.
@Suite("contrib: systemd units and the Nomad job")
struct ContribTests {
    static let contrib = Env.repo.appendingPathComponent("contrib")
    static let systemdAnalyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"].first { FileManager.default.isExecutableFile(atPath: $0) }

    @Test("systemd-analyze verify accepts both units with no warning (ExecStart pointed at the built pvh)",
          .enabled(if: systemdAnalyze != nil, "systemd-analyze is not installed (Debian: systemd)"),
          .enabled(if: Env.hasPVHBinary, "needs .build/debug/pvh"))
    func systemdUnitsVerify() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pvh-units-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for unit in ["pvh-daemon.service", "pvh-guest@.service"] {
            let text = try String(contentsOf: Self.contrib.appendingPathComponent("systemd/\(unit)"), encoding: .utf8)
            #expect(text.contains("/usr/local/bin/pvh "), "\(unit) runs /usr/local/bin/pvh")
            // verify checks that each Exec*= binary exists: the one just built.
            try text.replacingOccurrences(of: "/usr/local/bin/pvh ", with: Env.pvhBinary + " ")
                .write(to: dir.appendingPathComponent(unit), atomically: true, encoding: .utf8)
        }
        // A template is verified through an instance.
        try FileManager.default.createSymbolicLink(atPath: dir.appendingPathComponent("pvh-guest@web.service").path,
                                                   withDestinationPath: "pvh-guest@.service")
        let r = try runCommand(try #require(Self.systemdAnalyze),
                               ["verify", "--man=no", dir.appendingPathComponent("pvh-daemon.service").path,
                                dir.appendingPathComponent("pvh-guest@web.service").path], timeout: .seconds(60))
        // verify exits 0 on keys it ignores, but names them: no output at all is the pass.
        #expect(r.status == 0 && r.stderr.isEmpty && r.stdout.isEmpty, "\(r)")
    }

    @Test("the units say what a VMM needs: the commands, restart and kill policy, no PrivateDevices (it would hide /dev/kvm)")
    func systemdUnitsContent() throws {
        let daemon = try SystemdUnit(Self.contrib.appendingPathComponent("systemd/pvh-daemon.service"))
        #expect(daemon["Service", "ExecStart"] == ["/usr/local/bin/pvh daemon --foreground"])
        #expect(daemon["Service", "KillMode"] == ["process"])
        let guest = try SystemdUnit(Self.contrib.appendingPathComponent("systemd/pvh-guest@.service"))
        #expect(guest["Service", "ExecStart"] == ["/usr/local/bin/pvh create -F /etc/pvh/%i.cfg"])
        #expect(guest["Service", "KillMode"] == ["mixed"])
        #expect(guest["Service", "Restart"] == ["on-failure"])
        #expect(guest["Service", "SuccessExitStatus"] == ["130"])
        #expect(guest["Service", "RestartPreventExitStatus"] == ["1 2"])
        for unit in [daemon, guest] {
            #expect(unit["Service", "PrivateDevices"].isEmpty && unit["Service", "DevicePolicy"].isEmpty)
            #expect(unit["Service", "RestrictNamespaces"].isEmpty, "passt sandboxes itself in namespaces")
            #expect(unit["Install", "WantedBy"] == ["multi-user.target"])
        }
    }

    @Test("the Nomad job parses as HCL: a job with a raw_exec task running pvh create -F on the config its template writes")
    func nomadJob() throws {
        let text = try String(contentsOf: Self.contrib.appendingPathComponent("nomad/pvh-guest.nomad.hcl"), encoding: .utf8)
        let body = try HCL.parse(text)
        let jobs = body.blocks("job")
        #expect(jobs.count == 1 && jobs.first?.labels == ["pvh-web"])
        let job = try #require(jobs.first)
        #expect(job.body.attribute("type") == .string("service"))
        let task = try #require(job.body.blocks("group").first?.body.blocks("task").first)
        #expect(task.body.attribute("driver") == .string("raw_exec"))
        let config = try #require(task.body.blocks("config").first)
        #expect(config.body.attribute("command") == .string("/usr/local/bin/pvh"))
        guard case .list(let args)? = config.body.attribute("args") else {
            Issue.record("config.args is not a list")
            return
        }
        #expect(Array(args.prefix(2)) == [.string("create"), .string("-F")])
        let template = try #require(task.body.blocks("template").first)
        // The config pvh reads is the one the template writes.
        #expect(args.last == .string("${NOMAD_TASK_DIR}/web.cfg"))
        #expect(template.body.attribute("destination") == .string("local/web.cfg"))
        guard case .string(let cfg)? = template.body.attribute("data") else {
            Issue.record("template.data is not a string")
            return
        }
        // And it is a config pvh accepts (the template's one expression filled in as Nomad would).
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("pvh-nomad-\(UUID().uuidString.prefix(8)).cfg").path
        try cfg.replacingOccurrences(of: "{{ env \"NOMAD_ALLOC_INDEX\" }}", with: "0").write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        guard Env.hasPVHBinary else { return }
        let r = try runCommand(Env.pvhBinary, ["create", "-n", path])
        #expect(r.status == 0, "\(r)")
        #expect(r.stdout.contains("\"name\" : \"web-0\"") || r.stdout.contains("\"name\": \"web-0\""), "\(r.stdout)")
        #expect(task.body.attribute("kill_signal") == .string("SIGTERM"))
    }

    @Test("the HCL reader refuses what is not HCL: unbalanced braces, an unclosed string or heredoc, a missing '='")
    func hclRefuses() {
        for bad in ["job \"x\" {", "job \"x\" { a = \"b }", "a = <<EOT\nno end\n", "job { a \"b\" }", "a = [1, 2", "}"] {
            #expect(throws: HCL.ParseError.self, "\(bad.debugDescription)") { try HCL.parse(bad) }
        }
    }
}

/// The `[Section]` / `Key=Value` lines of a systemd unit, enough to check settings.
struct SystemdUnit {
    var entries: [(section: String, key: String, value: String)] = []
    init(_ url: URL) throws {
        var section = ""
        for raw in try String(contentsOf: url, encoding: .utf8).split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") { section = String(line.dropFirst().dropLast()); continue }
            guard let eq = line.firstIndex(of: "=") else { continue }
            entries.append((section, String(line[..<eq]), String(line[line.index(after: eq)...])))
        }
    }
    subscript(section: String, key: String) -> [String] {
        entries.filter { $0.section == section && $0.key == key }.map(\.value)
    }
}

/// A reader for the HCL a Nomad job is written in: blocks with labels,
/// attributes, strings (with `${...}`), heredocs, numbers, booleans, lists.
/// Enough to check a job's shape without Nomad; not a full HCL parser.
enum HCL {
    struct ParseError: Error, CustomStringConvertible {
        let message: String
        let line: Int
        var description: String { "line \(line): \(message)" }
    }
    indirect enum Value: Equatable {
        case string(String), number(String), bool(Bool), list([Value]), object(Body)
    }
    struct Block: Equatable {
        let type: String
        let labels: [String]
        let body: Body
    }
    struct Body: Equatable {
        var attributes: [(String, Value)] = []
        var children: [Block] = []
        func attribute(_ name: String) -> Value? { attributes.first { $0.0 == name }?.1 }
        func blocks(_ type: String) -> [Block] { children.filter { $0.type == type } }
        static func == (a: Body, b: Body) -> Bool {
            a.children == b.children && a.attributes.map(\.0) == b.attributes.map(\.0) && a.attributes.map(\.1) == b.attributes.map(\.1)
        }
    }

    static func parse(_ text: String) throws -> Body {
        var p = Parser(Array(text.unicodeScalars))
        let body = try p.body(closing: false)
        return body
    }

    struct Parser {
        let s: [Unicode.Scalar]
        var i = 0
        var line = 1
        init(_ s: [Unicode.Scalar]) { self.s = s }

        func fail(_ m: String) -> ParseError { ParseError(message: m, line: line) }
        var atEnd: Bool { i >= s.count }
        var peek: Unicode.Scalar? { atEnd ? nil : s[i] }

        mutating func advance() {
            if s[i] == "\n" { line += 1 }
            i += 1
        }

        /// Skips blanks, newlines and comments (#, //, /* */).
        mutating func skip() {
            while let c = peek {
                if c == " " || c == "\t" || c == "\r" || c == "\n" { advance(); continue }
                if c == "#" || (c == "/" && i + 1 < s.count && s[i + 1] == "/") {
                    while let d = peek, d != "\n" { advance() }
                    continue
                }
                if c == "/" && i + 1 < s.count && s[i + 1] == "*" {
                    advance(); advance()
                    while !atEnd && !(s[i] == "*" && i + 1 < s.count && s[i + 1] == "/") { advance() }
                    if !atEnd { advance(); advance() }
                    continue
                }
                return
            }
        }

        mutating func identifier() -> String? {
            guard let c = peek, c.properties.isAlphabetic || c == "_" else { return nil }
            var out = ""
            while let d = peek, d.properties.isAlphabetic || ("0"..."9").contains(d) || d == "_" || d == "-" {
                out.unicodeScalars.append(d)
                advance()
            }
            return out
        }

        mutating func body(closing: Bool) throws -> Body {
            var body = Body()
            while true {
                skip()
                guard let c = peek else {
                    if closing { throw fail("missing '}'") }
                    return body
                }
                if c == "}" {
                    guard closing else { throw fail("unexpected '}'") }
                    advance()
                    return body
                }
                guard let name = identifier() else { throw fail("expected an attribute or a block, found '\(c)'") }
                skip()
                if peek == "=" {
                    advance()
                    body.attributes.append((name, try value()))
                    continue
                }
                var labels: [String] = []
                while peek == "\"" {
                    labels.append(try string())
                    skip()
                }
                guard peek == "{" else { throw fail("expected '=' or '{' after \(name)") }
                advance()
                body.children.append(Block(type: name, labels: labels, body: try self.body(closing: true)))
            }
        }

        mutating func value() throws -> Value {
            skip()
            guard let c = peek else { throw fail("missing value") }
            switch c {
            case "\"": return .string(try string())
            case "<": return .string(try heredoc())
            case "[":
                advance()
                var items: [Value] = []
                while true {
                    skip()
                    if peek == "]" { advance(); return .list(items) }
                    items.append(try value())
                    skip()
                    if peek == "," { advance(); continue }
                    guard peek == "]" else { throw fail("expected ',' or ']' in a list") }
                }
            case "{":
                advance()
                return .object(try body(closing: true))
            case "-", "0"..."9":
                var out = ""
                while let d = peek, d == "-" || d == "." || ("0"..."9").contains(d) {
                    out.unicodeScalars.append(d)
                    advance()
                }
                return .number(out)
            default:
                guard let word = identifier() else { throw fail("unexpected '\(c)'") }
                switch word {
                case "true": return .bool(true)
                case "false": return .bool(false)
                default: throw fail("unexpected word \(word)")
                }
            }
        }

        /// A quoted string; `${...}` and `%{...}` are kept as written (braces balanced, quotes allowed inside).
        mutating func string() throws -> String {
            advance()  // "
            var out = ""
            while let c = peek {
                if c == "\n" { throw fail("newline in a string") }
                if c == "\"" {
                    advance()
                    return out
                }
                if c == "\\" {
                    advance()
                    guard let e = peek else { break }
                    switch e {
                    case "n": out += "\n"
                    case "t": out += "\t"
                    case "\"": out += "\""
                    case "\\": out += "\\"
                    default: throw fail("unknown escape \\\(e)")
                    }
                    advance()
                    continue
                }
                if (c == "$" || c == "%") && i + 1 < s.count && s[i + 1] == "{" {
                    var depth = 0
                    repeat {
                        let d = s[i]
                        if d == "{" { depth += 1 }
                        if d == "}" { depth -= 1 }
                        if d == "\n" { throw fail("newline in an interpolation") }
                        out.unicodeScalars.append(d)
                        advance()
                    } while depth > 0 && !atEnd
                    continue
                }
                out.unicodeScalars.append(c)
                advance()
            }
            throw fail("unterminated string")
        }

        /// `<<MARK` or `<<-MARK`, the lines up to one holding only MARK.
        mutating func heredoc() throws -> String {
            guard i + 1 < s.count, s[i + 1] == "<" else { throw fail("unexpected '<'") }
            advance(); advance()
            let indented = peek == "-"
            if indented { advance() }
            guard let mark = identifier() else { throw fail("heredoc without a marker") }
            guard peek == "\n" else { throw fail("heredoc marker not at the end of its line") }
            advance()
            var lines: [String] = []
            var current = ""
            while let c = peek {
                advance()
                if c == "\n" {
                    let trimmed = current.trimmingCharacters(in: .whitespaces)
                    if trimmed == mark && (indented || current == mark) { return lines.map { $0 + "\n" }.joined() }
                    lines.append(current)
                    current = ""
                } else {
                    current.unicodeScalars.append(c)
                }
            }
            if current.trimmingCharacters(in: .whitespaces) == mark { return lines.map { $0 + "\n" }.joined() }
            throw fail("heredoc \(mark) not closed")
        }
    }
}
