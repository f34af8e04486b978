import CXen
import Testing
import XenStore

@Suite("XenStore wire codec")
struct CodecTests {
    @Test("a WRITE request encodes as xsd_sockmsg + payload, little-endian")
    func goldenWrite() {
        let m = XenStoreMessage(type: .write, requestID: 0x0102_0304, transactionID: 5,
                                payload: XenStoreWire.nulTerminated(["/a"]) + Array("v".utf8))
        let golden: [UInt8] = [
            0x0b, 0x00, 0x00, 0x00,  // type: XS_WRITE = 11
            0x04, 0x03, 0x02, 0x01,  // req_id: 0x01020304
            0x05, 0x00, 0x00, 0x00,  // tx_id: 5
            0x04, 0x00, 0x00, 0x00,  // len: 4
            0x2f, 0x61, 0x00,        // "/a" NUL
            0x76,                    // value "v" (no NUL: WRITE's value is the rest)
        ]
        #expect(m.bytes == golden)
    }

    @Test("an error reply carries the errno name and a NUL, ids echoed")
    func goldenError() {
        let request = XenStoreMessage(type: .read, requestID: 9, transactionID: 3, strings: ["/x"])
        let reply = XenStoreWire.errorReply(.enoent, to: request)
        let golden: [UInt8] = [
            0x10, 0x00, 0x00, 0x00,  // type: XS_ERROR = 16
            0x09, 0x00, 0x00, 0x00,  // req_id echoed
            0x03, 0x00, 0x00, 0x00,  // tx_id echoed
            0x07, 0x00, 0x00, 0x00,  // len: 7
            0x45, 0x4e, 0x4f, 0x45, 0x4e, 0x54, 0x00,  // "ENOENT" NUL
        ]
        #expect(reply.bytes == golden)
    }

    @Test("a watch event is path NUL token NUL with zero ids")
    func goldenWatchEvent() {
        let golden: [UInt8] = [
            0x0f, 0x00, 0x00, 0x00,  // type: XS_WATCH_EVENT = 15
            0x00, 0x00, 0x00, 0x00,  // req_id 0
            0x00, 0x00, 0x00, 0x00,  // tx_id 0
            0x05, 0x00, 0x00, 0x00,  // len 5
            0x2f, 0x62, 0x00,        // "/b" NUL
            0x74, 0x00,              // "t" NUL
        ]
        #expect(XenStoreWire.watchEvent(path: "/b", token: "t").bytes == golden)
    }

    @Test("type values come from xsd_sockmsg_type")
    func typeValues() {
        #expect(XenStoreMessageType.control.rawValue == 0)
        #expect(XenStoreMessageType.directoryPart.rawValue == XS_DIRECTORY_PART.rawValue)
        #expect(XenStoreMessageType.resetWatches.rawValue == 21)  // XS_SET_TARGET + 2
        #expect(XenStoreMessageType(rawValue: 20) == nil)  // XS_RESTRICT, removed
        #expect(XenStoreMessageType(rawValue: XS_INVALID.rawValue) == nil)
        for t in XenStoreMessageType.allCases { #expect(XenStoreMessageType(rawValue: t.rawValue) == t) }
        #expect(XenStoreLimits.headerSize == 16)
        #expect(XenStoreLimits.payloadMax == 4096)
    }

    @Test("error names and order match xsd_errors in xs_wire.h")
    func errorTable() {
        #expect(Int(pvh_xsd_error_count()) == XenStoreError.allCases.count)
        for (i, e) in XenStoreError.allCases.enumerated() {
            let name = pvh_xsd_error_name(UInt32(i)).map { String(cString: $0) }
            #expect(e.wireName == name)
            #expect(XenStoreError(wireName: e.wireName) == e)
        }
    }

    @Test("the framer reassembles messages split at every byte boundary")
    func splitChunks() throws {
        let a = XenStoreMessage(type: .read, requestID: 1, strings: ["/local/domain/1/name"])
        let b = XenStoreMessage(type: .write, requestID: 2, transactionID: 4,
                                payload: XenStoreWire.nulTerminated(["x"]) + [0, 1, 2])
        let c = XenStoreMessage(type: .transactionStart, requestID: 3, payload: [])
        let stream = a.bytes + b.bytes + c.bytes
        for cut in 0...stream.count {
            for cut2 in stride(from: cut, through: stream.count, by: 7) {
                var f = XenStoreFramer()
                var got: [XenStoreFrame] = []
                got += try f.feed(Array(stream[0..<cut]))
                got += try f.feed(Array(stream[cut..<cut2]))
                got += try f.feed(Array(stream[cut2...]))
                #expect(got == [.message(a), .message(b), .message(c)])
                #expect(f.bufferedCount == 0)
            }
        }
        // One byte at a time.
        var f = XenStoreFramer()
        var got: [XenStoreFrame] = []
        for byte in stream { got += try f.feed([byte]) }
        #expect(got.count == 3)
    }

    @Test("unknown types are framed (for an ENOSYS reply); oversized lengths break the stream")
    func badFrames() throws {
        var f = XenStoreFramer()
        var bytes = XenStoreMessage(type: .read, requestID: 5, transactionID: 6, strings: ["a"]).bytes
        bytes[0] = 99
        #expect(try f.feed(bytes) == [.unknownType(rawType: 99, requestID: 5, transactionID: 6)])
        var big = XenStoreMessage(type: .read).bytes
        big[12] = 0x01; big[13] = 0x10  // len 4097
        #expect(throws: XenStoreFramingError.payloadTooLong(4097)) { try f.feed(big) }
        #expect(throws: XenStoreFramingError.payloadTooLong(4097)) { try f.feed([]) }
        // Exactly XENSTORE_PAYLOAD_MAX is fine.
        var g = XenStoreFramer()
        let max = XenStoreMessage(type: .write, payload: [UInt8](repeating: 0x41, count: 4096))
        #expect(try g.feed(max.bytes) == [.message(max)])
    }

    @Test("payload helpers follow get_strings / onearg")
    func payloadHelpers() {
        #expect(XenStoreWire.strings(Array("a\0b\0c".utf8)) == ["a", "b"])
        #expect(XenStoreWire.oneArgument(Array("abc\0".utf8)) == "abc")
        #expect(XenStoreWire.oneArgument(Array("abc".utf8)) == nil)
        #expect(XenStoreWire.oneArgument(Array("a\0b\0".utf8)) == nil)
        #expect(XenStoreWire.oneArgument([]) == nil)
    }
}
