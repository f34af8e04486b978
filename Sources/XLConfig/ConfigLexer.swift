/// One token of an xl.cfg file, as libxlu's lexer (tools/libs/util/libxlu_cfg_l.l)
/// delimits it.
struct ConfigToken: Sendable {
    enum Kind: Sendable, Equatable {
        /// `[a-z][._0-9a-z]*`: a key (lower case only, as in libxlu).
        case identifier
        /// `[0-9][0-9a-fx]*`: kept as text; converted when a key is looked up.
        case number
        /// A single- or double-quoted string, escapes decoded.
        case string
        /// A line end, or a `#` comment with the line end that closes it.
        case newline
        case equals, plusEquals, comma, leftBracket, rightBracket, semicolon
        /// End of input.
        case end
    }

    let kind: Kind
    /// The bytes the token was made of (what an error message quotes).
    let text: [UInt8]
    /// The decoded value of an identifier, number or string.
    let value: String
    /// The line bison's location gives it (libxlu's `GOT`): where it ends
    /// for most tokens, its own line for a line end.
    let line: Int

    /// The name bison's verbose messages give this kind of token.
    var grammarName: String {
        switch kind {
        case .identifier: "IDENT"
        case .number: "NUMBER"
        case .string: "STRING"
        case .newline: "NEWLINE"
        case .equals: "'='"
        case .plusEquals: "+="
        case .comma: "','"
        case .leftBracket: "'['"
        case .rightBracket: "']'"
        case .semicolon: "';'"
        case .end: "$end"
        }
    }
}

/// Splits an xl.cfg file into tokens the way libxlu's flex lexer does,
/// reporting its lexical errors through the shared `ConfigDiagnostics`.
///
/// The rules (libxlu_cfg_l.l): identifiers start with a lower-case letter;
/// numbers with a digit, followed by digits, `a`-`f` and `x`; blanks are
/// spaces and tabs only (a carriage return is an error, so are CRLF files);
/// a comment runs from `#` to the end of the line and must end with a line
/// end. Any other character starts a lexical error that takes the run of
/// non-blank characters after it (or the one blank, or the line end) into
/// the message; `+ - . ( ) :` there also mark the file as likely Python
/// (xm's old format). A bad character as the very last thing in the file
/// (nothing after it, not even a line end) is dropped without a message,
/// as flex's end-of-file handling in that state does.
struct ConfigLexer {
    private let bytes: [UInt8]
    private var index = 0
    /// flex's `yylineno`: 1 plus the line ends consumed so far.
    private(set) var lineNumber = 1
    /// The line of the last token returned: bison keeps it for end of input.
    private var lastLine = 1
    /// A character of `[+-.():]` started a lexical error.
    private(set) var likelyPython = false

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func next(_ diagnostics: inout ConfigDiagnostics) -> ConfigToken {
        while index < bytes.count {
            let start = index
            let c = bytes[index]
            switch c {
            case UInt8(ascii: "a")...UInt8(ascii: "z"):
                index += 1
                while index < bytes.count, Self.isIdentifierTail(bytes[index]) { index += 1 }
                return token(.identifier, from: start, value: true)
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                index += 1
                while index < bytes.count, Self.isNumberTail(bytes[index]) { index += 1 }
                return token(.number, from: start, value: true)
            case UInt8(ascii: " "), UInt8(ascii: "\t"):
                index += 1
            case UInt8(ascii: ","): index += 1; return token(.comma, from: start)
            case UInt8(ascii: "["): index += 1; return token(.leftBracket, from: start)
            case UInt8(ascii: "]"): index += 1; return token(.rightBracket, from: start)
            case UInt8(ascii: ";"): index += 1; return token(.semicolon, from: start)
            case UInt8(ascii: "="): index += 1; return token(.equals, from: start)
            case UInt8(ascii: "+") where index + 1 < bytes.count && bytes[index + 1] == UInt8(ascii: "="):
                index += 2
                return token(.plusEquals, from: start)
            case UInt8(ascii: "\n"):
                index += 1
                return lineEnd(from: start)
            case UInt8(ascii: "#"):
                // `\#.*\n`: only a comment closed by a line end is one.
                guard let end = bytes[index...].firstIndex(of: UInt8(ascii: "\n")) else {
                    if let t = lexicalError(diagnostics: &diagnostics) { return t }
                    continue
                }
                index = end + 1
                return lineEnd(from: start)
            case UInt8(ascii: "'"), UInt8(ascii: "\""):
                guard let end = quotedEnd(from: index) else {
                    if let t = lexicalError(diagnostics: &diagnostics) { return t }
                    continue
                }
                index = end
                let text = Array(bytes[start..<end])
                var decoded = ""
                do {
                    decoded = try Self.decode(quoted: text)
                } catch {
                    diagnostics.lexicalError(line: lineNumber, near: text, error.message)
                }
                lastLine = lineNumber
                return ConfigToken(kind: .string, text: text, value: decoded, line: lineNumber)
            default:
                if Self.pythonCharacters.contains(c) { likelyPython = true }
                if let t = lexicalError(diagnostics: &diagnostics) { return t }
            }
        }
        return ConfigToken(kind: .end, text: [], value: "", line: lastLine)
    }

    private static let pythonCharacters: Set<UInt8> = Set("+-.():".utf8)

    private static func isIdentifierTail(_ c: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(c) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c)
            || c == UInt8(ascii: ".") || c == UInt8(ascii: "_")
    }

    private static func isNumberTail(_ c: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(c)
            || c == UInt8(ascii: "x")
    }

    private static func isBlank(_ c: UInt8) -> Bool { c == UInt8(ascii: " ") || c == UInt8(ascii: "\t") }

    private mutating func token(_ kind: ConfigToken.Kind, from start: Int, value: Bool = false) -> ConfigToken {
        let text = Array(bytes[start..<index])
        lastLine = lineNumber
        return ConfigToken(kind: kind, text: text, value: value ? String(decoding: text, as: UTF8.self) : "", line: lineNumber)
    }

    /// A line end (or a comment and its line end): the token belongs to the
    /// line it ends.
    private mutating func lineEnd(from start: Int) -> ConfigToken {
        let line = lineNumber
        lineNumber += 1
        lastLine = line
        return ConfigToken(kind: .newline, text: Array(bytes[start..<index]), value: "", line: line)
    }

    /// Where a quoted string starting at `start` ends (one past its closing
    /// quote), or nil: no closing quote on the line. A backslash takes the
    /// next character, except a line end.
    private func quotedEnd(from start: Int) -> Int? {
        let quote = bytes[start]
        var i = start + 1
        while i < bytes.count {
            switch bytes[i] {
            case quote: return i + 1
            case UInt8(ascii: "\n"): return nil
            case UInt8(ascii: "\\"):
                guard i + 1 < bytes.count, bytes[i + 1] != UInt8(ascii: "\n") else { return nil }
                i += 2
            default: i += 1
            }
        }
        return nil
    }

    /// The character at `index` cannot start a token: report it with what
    /// follows it (a run of non-blanks, else one blank, else the line end,
    /// which is then still returned as a token). Nil: keep scanning.
    private mutating func lexicalError(diagnostics: inout ConfigDiagnostics) -> ConfigToken? {
        let start = index
        index += 1
        guard index < bytes.count else { return nil }
        let c = bytes[index]
        if c == UInt8(ascii: "\n") {
            index += 1
            lineNumber += 1
            let text = Array(bytes[start..<index])
            diagnostics.lexicalError(line: lineNumber, near: text, "lexical error")
            lastLine = lineNumber
            return ConfigToken(kind: .newline, text: text, value: "", line: lineNumber)
        }
        if Self.isBlank(c) {
            index += 1
        } else {
            while index < bytes.count, bytes[index] != UInt8(ascii: "\n"), !Self.isBlank(bytes[index]) { index += 1 }
        }
        diagnostics.lexicalError(line: lineNumber, near: Array(bytes[start..<index]), "lexical error")
        return nil
    }

    /// Why a quoted string's escapes could not be decoded.
    struct EscapeError: Error {
        let message: String
    }

    /// The characters between the quotes, escapes decoded.
    ///
    /// `\" \' \\` and C's `\a \b \f \n \r \t \v` as libxlu takes them
    /// (`xlu__cfgl_dequote`); any other letter after a backslash is refused
    /// with its message. Numeric escapes are decoded as C does: `\x` and
    /// exactly two hex digits, `\` and one to three octal digits. (libxlu
    /// 4.17 to today computes their value and never stores it: a `\x` is
    /// always refused and an octal escape vanishes from the string. pvh gives
    /// the escape its C meaning; a NUL character is refused, as nothing that
    /// takes a config string can hold it.)
    static func decode(quoted text: [UInt8]) throws(EscapeError) -> String {
        var out: [UInt8] = []
        var i = 1
        let end = text.count - 1
        while i < end {
            let c = text[i]
            i += 1
            guard c == UInt8(ascii: "\\") else {
                out.append(c)
                continue
            }
            let e = text[i]
            i += 1
            switch e {
            case UInt8(ascii: "\""), UInt8(ascii: "'"), UInt8(ascii: "\\"): out.append(e)
            case UInt8(ascii: "a"): out.append(0x07)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "v"): out.append(0x0B)
            case UInt8(ascii: "x"):
                guard i + 1 < end, let high = hexDigitValue(text[i]), let low = hexDigitValue(text[i + 1]) else {
                    throw EscapeError(message: "invalid digit after backslash hexnumerical character escape in quoted string")
                }
                i += 2
                out.append(high << 4 | low)
            case UInt8(ascii: "0")...UInt8(ascii: "7"):
                var value = Int(e - UInt8(ascii: "0"))
                var digits = 1
                while digits < 3, i < end, (UInt8(ascii: "0")...UInt8(ascii: "7")).contains(text[i]) {
                    value = value * 8 + Int(text[i] - UInt8(ascii: "0"))
                    i += 1
                    digits += 1
                }
                guard value > 0, value <= 0xFF else {
                    throw EscapeError(message: "invalid digit after backslash octalnumerical character escape in quoted string")
                }
                out.append(UInt8(value))
            default:
                throw EscapeError(message: "invalid character after backlash in quoted string")
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

}
