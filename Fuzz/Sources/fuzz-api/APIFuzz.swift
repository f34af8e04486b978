// Fuzz target: the API's request decoding (PVHAPI): a `POST /v1/domains`
// body through JSONDecoder into CreateDomainRequest, then
// ResolvedCreateRequest (xl.cfg text or a JSON object of xl keys written out
// as xl.cfg and resolved as `pvh create` resolves a file). Checks: a
// decoded request re-encodes and decodes to itself; resolving answers or
// throws an error with a 4xx status, never anything else; a JSON object of
// xl keys never becomes xl.cfg text that does not parse (config_syntax:
// the API wrote it, so that would be the API's bug).
import Foundation
import FuzzSupport
import PVHAPI

@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt { fuzzBytes(data, size, fuzzOne) }

@_cdecl("fuzz_api_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt { fuzzDriverMain(argc, argv) }

private func fuzzOne(_ input: [UInt8]) {
    guard let request = try? JSONDecoder().decode(CreateDomainRequest.self, from: Data(input)) else { return }
    do {
        let again = try JSONDecoder().decode(CreateDomainRequest.self, from: JSONEncoder().encode(request))
        precondition(again == request, "fuzz-api: \(request) re-encoded as \(again)")
    } catch {
        preconditionFailure("fuzz-api: \(request) does not re-encode: \(error)")
    }
    do {
        _ = try ResolvedCreateRequest(request)
    } catch {
        precondition((400..<500).contains(error.code.httpStatus), "fuzz-api: \(error.code) for a client's request: \(error)")
        if request.config != nil, request.xlConfig == nil {
            precondition(error.code != .configSyntax, "fuzz-api: the API wrote xl.cfg text that does not parse: \(error)")
        }
    }
}
