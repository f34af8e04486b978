// Fuzz target: the xl.cfg parser (XLConfig: libxlu's grammar, xl.cfg(5))
// and the resolution into a PVH domain configuration. Input: the bytes of a
// config file; lines after a line `--` are `xl create` overrides (KEY=VALUE).
// Checks: parsing and resolving are deterministic, every error is text, and
// a resolved configuration renders as JSON.
import FuzzSupport
import XLConfig

@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt { fuzzBytes(data, size, fuzzOne) }

@_cdecl("fuzz_xlconfig_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt { fuzzDriverMain(argc, argv) }

private func resolve(_ bytes: [UInt8], _ overrides: [String]) -> Result<XLDomainConfiguration, XLConfigError> {
    Result { () throws(XLConfigError) in
        let settings = try ConfigSettings(source: "fuzz.cfg", bytes: bytes, overrides: overrides)
        return try XLDomainConfiguration.resolve(settings).configuration
    }
}

private func fuzzOne(_ input: [UInt8]) {
    var bytes = input
    var overrides: [String] = []
    let marker: [UInt8] = Array("\n--\n".utf8)
    if let at = (0..<max(0, input.count - marker.count + 1)).first(where: { input[$0..<($0 + marker.count)].elementsEqual(marker) }) {
        bytes = Array(input[..<at])
        overrides = String(decoding: input[(at + marker.count)...], as: UTF8.self)
            .split(separator: "\n").prefix(8).map(String.init)
    }
    let first = resolve(bytes, overrides)
    precondition(first == resolve(bytes, overrides), "resolution not deterministic")
    switch first {
    case .success(let configuration): _ = configuration.json.rendered()
    case .failure(let error): precondition(!error.description.isEmpty, "empty error")
    }
}
