import GuestMemory
import XenRing

/// A request shaped like blkif's (112 bytes, 8-byte aligned: 32 slots in a
/// page), for ring tests: an id, an opcode, a value, and filler bytes.
public struct ToyRequest: RingRequest, Hashable {
    public static let size = 112
    public static let alignment = 8
    public var id: UInt64
    public var operation: UInt8
    public var value: UInt32
    public init(id: UInt64, operation: UInt8 = 1, value: UInt32 = 0) {
        self.id = id
        self.operation = operation
        self.value = value
    }
    public init(ringBytes b: [UInt8]) {
        id = LittleEndianBytes.decode(UInt64.self, from: b[0..<8])
        operation = b[8]
        value = LittleEndianBytes.decode(UInt32.self, from: b[12..<16])
    }
    public var ringBytes: [UInt8] {
        var b = LittleEndianBytes.encode(id) + [operation, 0, 0, 0] + LittleEndianBytes.encode(value)
        b += [UInt8](repeating: 0xa5, count: Self.size - b.count)
        return b
    }
}

/// A response shaped like blkif's (16 bytes: id, operation, status).
public struct ToyResponse: RingResponse, Hashable {
    public static let size = 16
    public static let alignment = 8
    public var id: UInt64
    public var status: Int16
    public init(id: UInt64, status: Int16 = 0) {
        self.id = id
        self.status = status
    }
    public init(ringBytes b: [UInt8]) {
        id = LittleEndianBytes.decode(UInt64.self, from: b[0..<8])
        status = Int16(bitPattern: LittleEndianBytes.decode(UInt16.self, from: b[10..<12]))
    }
    public var ringBytes: [UInt8] {
        LittleEndianBytes.encode(id) + [0, 0] + LittleEndianBytes.encode(UInt16(bitPattern: status)) + [0, 0, 0, 0]
    }
}
