/// The error lines of one parse, in libxlu's format and with its rules for
/// which errors are shown (`xlu__cfg_yyerror`, `xlu__cfgl_lexicalerror` in
/// tools/libs/util/libxlu_cfg.c).
struct ConfigDiagnostics {
    let source: String
    private(set) var lines: [String] = []
    /// Any error, shown or not: the file is refused.
    private(set) var failed = false
    /// The line of the last lexical error: an error at or before it is not
    /// shown (libxlu's `lexerrlineno`), so one bad token makes one message.
    private var lexicalErrorLine = -1

    init(source: String) { self.source = source }

    /// `FILE:LINE: config parsing error near `TEXT': MESSAGE`. The line is
    /// the token's; a token ending with a line end belongs to the line
    /// before (and when nothing else is left, is named `<newline>`);
    /// trailing blanks are not quoted. At end of input the quoted text is
    /// empty, as flex's end-of-file text prints. Quotes are left out only
    /// when there was nothing to quote (a lone line end).
    mutating func error(line: Int, near text: [UInt8], atEnd: Bool = false, _ message: String) {
        failed = true
        guard line > lexicalErrorLine else { return }
        var shownLine = line
        var text = text[...]
        var newline = false
        if text.last == UInt8(ascii: "\n") {
            text = text.dropLast()
            shownLine -= 1
            newline = text.isEmpty
        }
        while let last = text.last, last == UInt8(ascii: " ") || last == UInt8(ascii: "\t") { text = text.dropLast() }
        let quotes = !text.isEmpty || atEnd
        // printf's `%.*s` stops at a NUL byte: so does the quoted text.
        if let nul = text.firstIndex(of: 0) { text = text[..<nul] }
        let quoted = quotes ? "`" + String(decoding: text, as: UTF8.self) + "'" : ""
        lines.append("\(source):\(shownLine): config parsing error near \(quoted)\(newline ? "<newline>" : ""): \(message)")
    }

    /// A lexical error (or a value error found while lexing or storing):
    /// shown as any error, and it hides later errors up to its line.
    mutating func lexicalError(line: Int, near text: [UInt8], _ message: String) {
        error(line: line, near: text, message)
        lexicalErrorLine = line
    }

    /// An error bison's recovery does not show: the file is still refused.
    mutating func suppressed() { failed = true }

    /// libxlu's hint after a failed parse of what looks like xm's Python.
    static let pythonWarning = [
        "warning: Config file looks like it contains Python code.",
        "warning:  Arbitrary Python is no longer supported.",
        "warning:  See https://wiki.xen.org/wiki/PythonInXlConfig",
    ]
}

/// The parser for libxlu's grammar (tools/libs/util/libxlu_cfg_y.y):
///
///     file:       stmts | stmts assignment          (the last line needs no line end)
///     stmt:       assignment endstmt | endstmt | error NEWLINE
///     assignment: IDENT '=' value | IDENT '+=' value
///     endstmt:    NEWLINE | ';'
///     value:      STRING | NUMBER | '[' nlok valuelist ']'
///     valuelist:  (empty) | values | values ',' nlok
///     values:     value nlok | values ',' nlok value nlok
///
/// Lists nest and may span lines; a statement may not. Each assignment is
/// stored as it is read (`xlu__cfg_set_store`): `=` replaces, `+=` appends
/// to the previous value of the same key (string to string, list to list).
///
/// Errors follow bison's recovery as libxlu's generated parser shows it:
/// a syntax error skips to the next line end and parsing goes on, but a
/// second one is shown only after three tokens were read without error;
/// an unexpected token after a complete assignment ends the parse. The
/// "expecting" lists are the ones bison's tables give (an unexpected token
/// in a list always expects `']'`).
struct ConfigParser {
    private var lexer: ConfigLexer
    private var diagnostics: ConfigDiagnostics
    private var settings = ConfigSettings.Builder()
    /// bison's `yyerrstatus`: tokens still to shift before another syntax
    /// error is shown.
    private var recovering = 0
    private var lookahead: ConfigToken?

    init(source: String, bytes: [UInt8]) {
        lexer = ConfigLexer(bytes)
        diagnostics = ConfigDiagnostics(source: source)
        settings.source = source
    }

    /// A syntax error: stops the statement (and, when it is `fatal`, the parse).
    private struct SyntaxError: Error {
        let fatal: Bool
    }

    mutating func parse() -> Result<ConfigSettings, XLConfigError> {
        statements: while true {
            let token = peek()
            switch token.kind {
            case .end:
                break statements
            case .newline, .semicolon:
                shift()
            case .identifier:
                do {
                    try assignment()
                } catch {
                    if error.fatal || !recover() { break statements }
                }
            default:
                syntaxError(token, expecting: "$end or IDENT or NEWLINE or ';'")
                if !recover() { break statements }
            }
        }
        guard diagnostics.failed else { return .success(settings.build()) }
        var lines = diagnostics.lines
        if lexer.likelyPython { lines += ConfigDiagnostics.pythonWarning }
        return .failure(.parse(lines))
    }

    private mutating func peek() -> ConfigToken {
        if let lookahead { return lookahead }
        let t = lexer.next(&diagnostics)
        lookahead = t
        return t
    }

    @discardableResult
    private mutating func shift() -> ConfigToken {
        let t = peek()
        lookahead = nil
        if recovering > 0 { recovering -= 1 }
        return t
    }

    private mutating func syntaxError(_ token: ConfigToken, expecting: String) {
        if recovering == 0 {
            diagnostics.error(line: token.line, near: token.text, atEnd: token.kind == .end,
                              "syntax error, unexpected \(token.grammarName), expecting \(expecting)")
        } else {
            diagnostics.suppressed()
        }
    }

    /// `stmt: error NEWLINE`: drops tokens up to and including the next
    /// line end. False at end of input (bison aborts).
    private mutating func recover() -> Bool {
        while true {
            let t = peek()
            lookahead = nil
            switch t.kind {
            case .end: return false
            case .newline:
                recovering = 2  // the error token and this line end are shifted
                return true
            default: continue
            }
        }
    }

    private mutating func assignment() throws(SyntaxError) {
        let name = shift()
        let op = peek()
        let append: Bool
        switch op.kind {
        case .equals: append = false
        case .plusEquals: append = true
        default:
            syntaxError(op, expecting: "+= or '='")
            throw SyntaxError(fatal: false)
        }
        shift()
        let start = peek()
        guard start.kind == .string || start.kind == .number || start.kind == .leftBracket else {
            syntaxError(start, expecting: "STRING or NUMBER or '['")
            throw SyntaxError(fatal: false)
        }
        var last = start
        let value = try self.value(last: &last)
        // After any error libxlu stores nothing more (`if (ctx->err) goto
        // out`), so a later `+=` finds no earlier value to clash with.
        if !diagnostics.failed, let message = settings.store(name: name.value, value: value, append: append, line: start.line) {
            diagnostics.lexicalError(line: lexer.lineNumber, near: last.text, message)
        }
        let end = peek()
        switch end.kind {
        case .newline, .semicolon: shift()
        case .end: break
        default:
            syntaxError(end, expecting: "$end")
            throw SyntaxError(fatal: true)
        }
    }

    /// How deep lists may nest. libxlu's parser stack (bison's 10,000
    /// entries) takes about 5,000 levels before "memory exhausted"; pvh
    /// stops far sooner, so a hostile file cannot run the recursion (here
    /// and in every walk of the value) out of stack. Real configs nest two.
    static let maximumNesting = 64

    /// One value; `last` is its last token (what a `+=` error quotes).
    private mutating func value(last: inout ConfigToken, depth: Int = 1) throws(SyntaxError) -> ConfigValue {
        let first = shift()
        last = first
        switch first.kind {
        case .string, .number: return .string(first.value)
        default: break
        }
        guard depth <= Self.maximumNesting else {
            diagnostics.error(line: first.line, near: first.text, "lists nested deeper than \(Self.maximumNesting) levels")
            throw SyntaxError(fatal: true)
        }
        var items: [ConfigValue] = []
        skipNewlines()
        while true {
            let t = peek()
            switch t.kind {
            case .rightBracket:
                last = shift()
                return .list(items)
            case .string, .number, .leftBracket:
                items.append(try value(last: &last, depth: depth + 1))
                skipNewlines()
                let separator = peek()
                switch separator.kind {
                case .comma:
                    shift()
                    skipNewlines()
                case .rightBracket:
                    continue
                default:
                    syntaxError(separator, expecting: "']'")
                    throw SyntaxError(fatal: false)
                }
            default:
                syntaxError(t, expecting: "']'")
                throw SyntaxError(fatal: false)
            }
        }
    }

    private mutating func skipNewlines() {
        while peek().kind == .newline { shift() }
    }
}
