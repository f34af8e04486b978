import Testing
import XLConfig

/// Parses `text` as the file `t.cfg`.
func settings(_ text: String, overrides: [String] = []) throws -> ConfigSettings {
    try ConfigSettings(source: "t.cfg", bytes: Array(text.utf8), overrides: overrides)
}

/// The error lines a parse of `text` gives (none: it parsed).
func parseErrors(_ text: String, overrides: [String] = []) -> [String] {
    do {
        _ = try settings(text, overrides: overrides)
        return []
    } catch let error as XLConfigError {
        return error.lines
    } catch {
        return ["unexpected \(error)"]
    }
}

/// The error a lookup throws, one line.
func lookupError(_ body: () throws -> Void) -> String? {
    do {
        try body()
        return nil
    } catch let error as XLConfigError {
        return error.description
    } catch {
        return "unexpected \(error)"
    }
}

/// The grammar of libxlu (tools/libs/util/libxlu_cfg_l.l, libxlu_cfg_y.y).
/// Every expected message below is what Debian 12's libxlutil (Xen 4.17)
/// prints for the same input, checked against it when these were written.
@Suite("xl.cfg grammar (libxlu)")
struct GrammarTests {
    // MARK: Statements and values

    @Test("KEY = VALUE ended by a line end or ';', the last line needs none")
    func statements() throws {
        let s = try settings("a = 1\nb = \"two\"; c = 'three' ;\n;\n\nd=4")
        #expect(try s.integer("a") == 1)
        #expect(try s.string("b") == "two")
        #expect(try s.string("c") == "three")
        #expect(try s.integer("d") == 4)
        #expect(s.keys == ["a", "b", "c", "d"])
        #expect(s["d"]?.line == 5)
    }

    @Test("keys: a lower-case letter, then lower-case letters, digits, '.' and '_'")
    func identifiers() throws {
        let s = try settings("a.b_c9 = 1\n")
        #expect(try s.integer("a.b_c9") == 1)
        #expect(parseErrors("A = 1\n") == ["t.cfg:1: config parsing error near `A': lexical error"])
        #expect(parseErrors("_a = 1\n") == ["t.cfg:1: config parsing error near `_a': lexical error"])
    }

    @Test("# comments run to the line end; blank and comment-only lines are empty statements")
    func comments() throws {
        let s = try settings("#c\n\n  # x = 2\na=1 # trailing \"quote\n")
        #expect(try s.integer("a") == 1)
        #expect(s["x"] == nil)
        // A comment must end with a line end (flex's `\#.*\n`).
        #expect(parseErrors("a = 1 # comment") == ["t.cfg:1: config parsing error near `#': lexical error"])
    }

    @Test("numbers stay text until looked up: decimal, hex, octal as strtol reads them")
    func numbers() throws {
        let s = try settings("a = 0x1f\nb = 010\nc = 08\nd = 1x\ne = 9223372036854775807\nf = 9223372036854775808\ng = 0\n")
        #expect(try s.integer("a") == 31)
        #expect(try s.integer("b") == 8)
        #expect(try s.string("b") == "010")
        #expect(lookupError { _ = try s.integer("c") } == "t.cfg:3: parameter `c' is not a valid number")
        #expect(lookupError { _ = try s.integer("d") } == "t.cfg:4: parameter `d' is not a valid number")
        #expect(try s.integer("e") == Int.max)
        #expect(lookupError { _ = try s.integer("f") }
            == "t.cfg:6: parameter `f' could not be parsed as a number: Numerical result out of range")
        #expect(try s.integer("g") == 0)
        // Upper-case hex digits are not part of a NUMBER token.
        #expect(parseErrors("a = 0x1F\n") == ["t.cfg:1: config parsing error near `F': lexical error"])
    }

    @Test("a number in a string converts as strtol does: sign, blanks before, 0X", arguments: [
        (" 12", 12), ("-5", -5), ("0X1F", 31), ("+0x10", 16), ("-9223372036854775808", Int.min), ("0777", 511),
    ])
    func numbersInStrings(_ text: String, _ value: Int) throws {
        #expect(try settings("a = \"\(text)\"\n").integer("a") == value)
    }

    @Test("text that is not all number is refused", arguments: ["12 ", "", "0x", "1.5", "- 1"])
    func notNumbers(_ text: String) throws {
        let s = try settings("a = '\(text)'\n")
        #expect(lookupError { _ = try s.integer("a") } == "t.cfg:1: parameter `a' is not a valid number")
    }

    @Test("bounds name the key, the value and the bound")
    func bounds() throws {
        let s = try settings("a = 0\nb = 70\n")
        #expect(lookupError { _ = try s.integer("a", in: 1...64) } == "t.cfg:1: parameter `a': value `0' is smaller than minimum bound '1'")
        #expect(lookupError { _ = try s.integer("b", in: 1...64) } == "t.cfg:2: parameter `b': value `70' is greater than maximum bound '64'")
    }

    // MARK: Strings

    @Test("single and double quotes, C escapes")
    func strings() throws {
        let s = try settings(#"a = "x\"y'z"; b = 'it\'s "q"'; c = "\a\b\f\n\r\t\v\\"; d = "\x41\102\7""# + "\n")
        #expect(try s.string("a") == "x\"y'z")
        #expect(try s.string("b") == "it's \"q\"")
        #expect(try s.string("c") == "\u{07}\u{08}\u{0C}\n\r\t\u{0B}\\")
        #expect(try s.string("d") == "AB\u{07}")
        #expect(try settings("a = 'Ünïcödé'\n").string("a") == "Ünïcödé")
    }

    @Test("bad escapes: libxlu's messages, the whole string quoted")
    func badEscapes() {
        #expect(parseErrors(#"a = "x\qy""# + "\n")
            == [#"t.cfg:1: config parsing error near `"x\qy"': invalid character after backlash in quoted string"#])
        #expect(parseErrors(#"a = "1\x4""# + "\n")
            == [#"t.cfg:1: config parsing error near `"1\x4"': invalid digit after backslash hexnumerical character escape in quoted string"#])
        #expect(parseErrors(#"a = "\0""# + "\n")
            == [#"t.cfg:1: config parsing error near `"\0"': invalid digit after backslash octalnumerical character escape in quoted string"#])
    }

    @Test("an unterminated string, or one broken by a line end, is a lexical error")
    func unterminated() {
        #expect(parseErrors("a = \"unterminated\n") == ["t.cfg:1: config parsing error near `\"unterminated': lexical error"])
        #expect(parseErrors("a = \"x\\\n\"\n") == [
            "t.cfg:1: config parsing error near `\"x\\': lexical error",
            "t.cfg:2: config parsing error near `\"': lexical error",
        ])
        // Two strings in a row are not one (no C-style concatenation).
        #expect(parseErrors("a = 'it''s'\n") == ["t.cfg:1: config parsing error near `'s'': syntax error, unexpected STRING, expecting $end"])
    }

    // MARK: Lists

    @Test("lists nest, span lines, take a trailing comma; [] is empty")
    func lists() throws {
        let s = try settings("a = [ \"x\", [ 1, [ ] ], 'y', ]\nb = [\n  1,\n\n  2,\n]\nc = []\n")
        #expect(s["a"]?.value == .list([.string("x"), .list([.string("1"), .list([])]), .string("y")]))
        #expect(s["b"]?.value == .list([.string("1"), .string("2")]))
        #expect(s["b"]?.line == 2)
        #expect(s["c"]?.value == .list([]))
    }

    @Test("a list where a single value belongs, and the reverse, name the key and line")
    func wrongShapes() throws {
        let s = try settings("a = [1]\nb = \"1\"\n")
        #expect(lookupError { _ = try s.string("a") } == "t.cfg:1: parameter `a' is a list but should be a single value")
        #expect(lookupError { _ = try s.integer("a") } == "t.cfg:1: parameter `a' is a list but should be a single value")
        #expect(lookupError { _ = try s.list("b") } == "t.cfg:2: parameter `b' is a single value but should be a list")
    }

    @Test("list syntax errors all expect ']'", arguments: [
        ("a = [,]\n", "t.cfg:1: config parsing error near `,': syntax error, unexpected ',', expecting ']'"),
        ("a = [1 2]\n", "t.cfg:1: config parsing error near `2': syntax error, unexpected NUMBER, expecting ']'"),
        ("a = [1\n = ]\n", "t.cfg:2: config parsing error near `=': syntax error, unexpected '=', expecting ']'"),
        ("a = [1,[2 =]]\n", "t.cfg:1: config parsing error near `=': syntax error, unexpected '=', expecting ']'"),
        ("a = [1,\n\n\n", "t.cfg:3: config parsing error near `': syntax error, unexpected $end, expecting ']'"),
    ])
    func listErrors(_ text: String, _ message: String) {
        #expect(parseErrors(text) == [message])
    }

    // MARK: +=, later keys win

    @Test("later keys win; += appends strings and lists, and starts a key never set")
    func appending() throws {
        let s = try settings("a = 1\na = 2\nb = \"s\"\nb += \"t\"\nc = [1]\nc += [2, 3]\nd += 'x'\n")
        #expect(try s.integer("a") == 2)
        #expect(s["a"]?.line == 2)
        #expect(try s.string("b") == "st")
        #expect(s["c"]?.value == .list([.string("1"), .string("2"), .string("3")]))
        #expect(try s.string("d") == "x")
    }

    @Test("+= on numbers is refused at lookup; mixing a list and a string at parse")
    func appendingErrors() throws {
        let s = try settings("a = 1\na += 2\n")
        #expect(lookupError { _ = try s.integer("a") } == "t.cfg:2: can't use += with numbers for parameter `a'")
        #expect(try s.string("a") == "12")
        #expect(parseErrors("a = \"s\"\na += [1]\n") == [#"t.cfg:2: config parsing error near `]': can't add [list] to "string" or vice versa"#])
        #expect(parseErrors("a = [1]\na += \"x\"\n") == [#"t.cfg:2: config parsing error near `"x"': can't add [list] to "string" or vice versa"#])
    }

    // MARK: Syntax errors, as xl prints them

    @Test("each parser state's message", arguments: [
        ("a = 1\nb c\n", "t.cfg:2: config parsing error near `c': syntax error, unexpected IDENT, expecting += or '='"),
        ("a = 1\nb = c\n", "t.cfg:2: config parsing error near `c': syntax error, unexpected IDENT, expecting STRING or NUMBER or '['"),
        ("= 1\n", "t.cfg:1: config parsing error near `=': syntax error, unexpected '=', expecting $end or IDENT or NEWLINE or ';'"),
        ("a = 1 2\n", "t.cfg:1: config parsing error near `2': syntax error, unexpected NUMBER, expecting $end"),
        ("a = 1 +=\n", "t.cfg:1: config parsing error near `+=': syntax error, unexpected +=, expecting $end"),
        ("a == 1\n", "t.cfg:1: config parsing error near `=': syntax error, unexpected '=', expecting STRING or NUMBER or '['"),
        ("a", "t.cfg:1: config parsing error near `': syntax error, unexpected $end, expecting += or '='"),
    ])
    func syntaxErrors(_ text: String, _ message: String) {
        #expect(parseErrors(text) == [message])
    }

    @Test("an error at a line end is reported on the line before, as xl does")
    func lineEndErrors() {
        #expect(parseErrors("a = \n") == [
            "t.cfg:0: config parsing error near <newline>: syntax error, unexpected NEWLINE, expecting STRING or NUMBER or '['",
        ])
        #expect(parseErrors("x = 1\na = # c\n") == [
            "t.cfg:1: config parsing error near `# c': syntax error, unexpected NEWLINE, expecting STRING or NUMBER or '['",
        ])
    }

    @Test("lexical errors: the bad character and the non-blanks after it")
    func lexicalErrors() {
        #expect(parseErrors("a = Foo\n") == ["t.cfg:1: config parsing error near `Foo': lexical error"])
        #expect(parseErrors("a = 1\r\n") == ["t.cfg:1: config parsing error near `\r': lexical error"])
        #expect(parseErrors("a = 1\n@ = 2\n") == ["t.cfg:2: config parsing error near `@': lexical error"])
        // Each further bad token is reported unless one before it on its line was.
        #expect(parseErrors("a = Q\nb = R\n") == [
            "t.cfg:1: config parsing error near `Q': lexical error", "t.cfg:2: config parsing error near `R': lexical error",
        ])
        #expect(parseErrors("a = Q R S\n") == [
            "t.cfg:1: config parsing error near `Q': lexical error", "t.cfg:1: config parsing error near `S': lexical error",
        ])
    }

    @Test("Python-looking files get xl's hint after the errors")
    func python() {
        #expect(parseErrors("x = 1\na = (1)\n") == [
            "t.cfg:2: config parsing error near `(1)': lexical error",
            "warning: Config file looks like it contains Python code.",
            "warning:  Arbitrary Python is no longer supported.",
            "warning:  See https://wiki.xen.org/wiki/PythonInXlConfig",
        ])
        #expect(parseErrors("a = -1\n").count == 4)
    }

    @Test("recovery: parsing goes on after a line's error, but not after a complete assignment's")
    func recovery() {
        #expect(parseErrors("a = \nb = 1 ]\n") == [
            "t.cfg:0: config parsing error near <newline>: syntax error, unexpected NEWLINE, expecting STRING or NUMBER or '['",
            "t.cfg:2: config parsing error near `]': syntax error, unexpected ']', expecting $end",
        ])
        #expect(parseErrors("b c\nd = Q\n") == [
            "t.cfg:1: config parsing error near `c': syntax error, unexpected IDENT, expecting += or '='",
            "t.cfg:2: config parsing error near `Q': lexical error",
        ])
        // After `a = 1 ]` the parse stops: line 2's error is never seen.
        #expect(parseErrors("a = 1 ]\nb = Q\n") == ["t.cfg:1: config parsing error near `]': syntax error, unexpected ']', expecting $end"])
        // Nothing is stored after an error, so this `+=` clashes with nothing.
        #expect(parseErrors("a = [\n,\n]\nb = [\n]\nb += 010\n") == [
            "t.cfg:2: config parsing error near `,': syntax error, unexpected ',', expecting ']'",
        ])
        // A lexical error hides the syntax error it causes on its line.
        #expect(parseErrors("a = Q\nb = 1 ]\n") == ["t.cfg:1: config parsing error near `Q': lexical error"])
    }

    @Test("a bad character at the very end, nothing after it, is dropped as flex does")
    func trailingJunk() throws {
        #expect(try settings("a = 1\nQ").integer("a") == 1)
    }

    @Test("hostile input: NUL bytes, long lines, deep nesting end in errors or values, never a crash")
    func hostile() throws {
        // The quoted text stops at the NUL, as printf's does in xl.
        #expect(parseErrors("a = \u{0}\n") == ["t.cfg:1: config parsing error near `': lexical error"])
        let long = String(repeating: "x", count: 100_000)
        #expect(try settings("a = '\(long)'\n").string("a")?.count == 100_000)
        func nested(_ n: Int) -> String { String(repeating: "[", count: n) + String(repeating: "]", count: n) }
        #expect(parseErrors("a = \(nested(64))\n").isEmpty)
        #expect(parseErrors("x = 1\na = \(nested(100_000))\n") == ["t.cfg:2: config parsing error near `[': lists nested deeper than 64 levels"])
        let wide = "a = [" + String(repeating: "1,\n", count: 20_000) + "]\n"
        #expect(try settings(wide).list("a")?.items.count == 20_000)
    }

    // MARK: Overrides (xl create FILE KEY=VALUE...)

    @Test("overrides are more lines after the file: they win and += on the file's values")
    func overrides() throws {
        let s = try settings("memory = 512\nname = \"a\"\nextra = \"x\"", overrides: ["memory=1024", "extra+=\" y\"", "vcpus=2"])
        #expect(try s.integer("memory") == 1024)
        #expect(try s.string("extra") == "x y")
        #expect(try s.integer("vcpus") == 2)
        #expect(try s.string("name") == "a")
        // Line numbers continue past the file: a blank line, then one per override.
        #expect(s["memory"]?.line == 4)
    }

    @Test("an override is parsed with the file's grammar: an unquoted string is an error past the file's end")
    func overrideErrors() {
        #expect(parseErrors("a = 1\n", overrides: ["name=web"]) == [
            "t.cfg:3: config parsing error near `web': syntax error, unexpected IDENT, expecting STRING or NUMBER or '['",
        ])
    }
}
