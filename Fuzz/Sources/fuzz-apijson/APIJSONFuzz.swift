// Fuzz target: the API's JSON models (PVHAPIModels, without Hummingbird):
// what a client's request body becomes. Input: one selector byte (which
// model), then the body. Checks: every body a model decodes encodes and
// decodes again to the same value (the daemon answers with what it
// read); a create request resolves deterministically (the xl.cfg text it
// is written out as, XLConfig's parser), and a refusal is an APIError
// with a message and a 400 status.
import Foundation
import FuzzSupport
import PVHAPIModels
import XLConfig

@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt { fuzzBytes(data, size, fuzzOne) }

@_cdecl("fuzz_apijson_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt { fuzzDriverMain(argc, argv) }

/// Decodes `body` as `T`; if it decodes, its encoding must decode to the same value.
private func roundTrip<T: Codable & Equatable>(_ type: T.Type, _ body: Data) -> T? {
    guard let value = try? JSONDecoder().decode(T.self, from: body) else { return nil }
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    guard let encoded = try? encoder.encode(value) else {
        preconditionFailure("\(T.self) decoded but does not encode")
    }
    let again = try? JSONDecoder().decode(T.self, from: encoded)
    precondition(again == value, "\(T.self) does not survive a round trip: \(String(decoding: encoded, as: UTF8.self))")
    return value
}

private func resolve(_ request: CreateDomainRequest) -> Result<String, APIError> {
    Result { () throws(APIError) in
        let resolved = try ResolvedCreateRequest(request)
        return "\(resolved.configuration.json.rendered())|\(resolved.warnings)|\(resolved.text)"
    }
}

private func fuzzOne(_ input: [UInt8]) {
    guard let selector = input.first else { return }
    let body = Data(input.dropFirst())
    switch selector % 9 {
    case 0:
        guard let request = roundTrip(CreateDomainRequest.self, body) else { return }
        let first = resolve(request)
        precondition(first == resolve(request), "create resolution not deterministic")
        if case .failure(let error) = first {
            precondition(!error.message.isEmpty && error.code.httpStatus == 400, "create refused with \(error.code): \(error.message)")
        }
    case 1: _ = roundTrip(JSON.self, body)
    case 2: _ = roundTrip(MemoryRequest.self, body)
    case 3: _ = roundTrip(VCPURequest.self, body)
    case 4: _ = roundTrip(AttachDeviceRequest.self, body)
    case 5: _ = roundTrip(APIError.self, body)
    case 6: _ = roundTrip(DomainInfo.self, body)
    case 7: _ = roundTrip(XenStoreNode.self, body)
    default: _ = roundTrip(DomainStats.self, body)
    }
}
