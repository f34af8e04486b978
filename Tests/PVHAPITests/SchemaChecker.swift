import Foundation
import PVHAPI

/// The subset of JSON Schema (as OpenAPI 3.0 uses it) the API document
/// uses: type, required, properties, additionalProperties: false, items,
/// enum, pattern, minimum/maximum, $ref, allOf, nullable. `check` returns
/// every violation as "PATH: what", empty when the value fits.
struct SchemaChecker {
    let document: JSON

    init(documentAt path: String) throws {
        document = try JSONDecoder().decode(JSON.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
    }

    func schema(named name: String) -> JSON? { document["components"]?["schemas"]?[name] }

    func resolve(_ schema: JSON) -> JSON {
        guard case .string(let ref)? = schema["$ref"], let name = ref.split(separator: "/").last,
              let target = self.schema(named: String(name)) else { return schema }
        return resolve(target)
    }

    func check(_ value: JSON, against raw: JSON, at path: String = "$") -> [String] {
        let schema = resolve(raw)
        if case .null = value {
            return schema["nullable"] == .bool(true) ? [] : ["\(path): null where the schema does not allow it"]
        }
        var problems: [String] = []
        if case .array(let all)? = schema["allOf"] {
            for part in all { problems += check(value, against: part, at: path) }
        }
        if case .string(let type)? = schema["type"] {
            let fits: Bool = switch (type, value) {
            case ("object", .object), ("array", .array), ("string", .string), ("boolean", .bool), ("number", .number): true
            case ("integer", .number(let n)): n == n.rounded()
            default: false
            }
            guard fits else { return problems + ["\(path): not a \(type): \(value)"] }
        }
        if case .array(let choices)? = schema["enum"], !choices.contains(value) {
            problems.append("\(path): \(value) not one of the enum")
        }
        if case .string(let pattern)? = schema["pattern"], case .string(let s) = value,
           s.range(of: pattern, options: .regularExpression) == nil {
            problems.append("\(path): \(s) does not match \(pattern)")
        }
        if case .number(let n) = value {
            if case .number(let minimum)? = schema["minimum"], n < minimum { problems.append("\(path): \(n) < \(minimum)") }
            if case .number(let maximum)? = schema["maximum"], n > maximum { problems.append("\(path): \(n) > \(maximum)") }
        }
        if case .object(let object) = value {
            if case .array(let required)? = schema["required"] {
                for case .string(let key) in required where object[key] == nil { problems.append("\(path): no \(key)") }
            }
            for (key, member) in object {
                if let sub = schema["properties"]?[key] {
                    problems += check(member, against: sub, at: "\(path).\(key)")
                } else if schema["additionalProperties"] == .bool(false) {
                    problems.append("\(path): \(key) is not in the schema")
                }
            }
        }
        if case .array(let array) = value, let items = schema["items"] {
            for (i, item) in array.enumerated() { problems += check(item, against: items, at: "\(path)[\(i)]") }
        }
        return problems
    }

    /// The schema the document gives `method path`'s answer with `status`.
    func responseSchema(_ method: String, _ path: String, status: Int) -> JSON? {
        let content = document["paths"]?[path]?[method.lowercased()]?["responses"]?[String(status)]?["content"]
        return (content?["application/json"] ?? content?["application/x-ndjson"])?["schema"]
    }

    /// Every "METHOD path" the document describes.
    var operations: Set<String> {
        guard case .object(let paths)? = document["paths"] else { return [] }
        var all = Set<String>()
        for (path, item) in paths {
            guard case .object(let methods) = item else { continue }
            for method in methods.keys where ["get", "put", "post", "delete", "patch"].contains(method) {
                all.insert("\(method.uppercased()) \(path)")
            }
        }
        return all
    }
}

extension JSON {
    subscript(key: String) -> JSON? {
        if case .object(let members) = self { return members[key] }
        return nil
    }
}
