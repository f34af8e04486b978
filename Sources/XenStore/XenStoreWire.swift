import CXen

/// The request and reply types of the XenStore wire protocol: the closed set
/// of `enum xsd_sockmsg_type` (io/xs_wire.h). Values come from the C header.
public enum XenStoreMessageType: CaseIterable, Hashable, Sendable, CustomStringConvertible {
    case control, directory, read, getPermissions, watch, unwatch
    case transactionStart, transactionEnd, introduce, release, getDomainPath
    case write, mkdir, remove, setPermissions, watchEvent, error
    case isDomainIntroduced, resume, setTarget, resetWatches, directoryPart

    /// The `xsd_sockmsg.type` value.
    public var rawValue: UInt32 {
        let t: xsd_sockmsg_type
        switch self {
        case .control: t = XS_CONTROL
        case .directory: t = XS_DIRECTORY
        case .read: t = XS_READ
        case .getPermissions: t = XS_GET_PERMS
        case .watch: t = XS_WATCH
        case .unwatch: t = XS_UNWATCH
        case .transactionStart: t = XS_TRANSACTION_START
        case .transactionEnd: t = XS_TRANSACTION_END
        case .introduce: t = XS_INTRODUCE
        case .release: t = XS_RELEASE
        case .getDomainPath: t = XS_GET_DOMAIN_PATH
        case .write: t = XS_WRITE
        case .mkdir: t = XS_MKDIR
        case .remove: t = XS_RM
        case .setPermissions: t = XS_SET_PERMS
        case .watchEvent: t = XS_WATCH_EVENT
        case .error: t = XS_ERROR
        case .isDomainIntroduced: t = XS_IS_DOMAIN_INTRODUCED
        case .resume: t = XS_RESUME
        case .setTarget: t = XS_SET_TARGET
        case .resetWatches: t = XS_RESET_WATCHES
        case .directoryPart: t = XS_DIRECTORY_PART
        }
        return t.rawValue
    }

    /// The type with `xsd_sockmsg.type == rawValue`, or nil for values the
    /// header does not define (C xenstored answers those with ENOSYS).
    public init?(rawValue: UInt32) {
        guard let t = Self.allCases.first(where: { $0.rawValue == rawValue }) else { return nil }
        self = t
    }

    public var description: String {
        switch self {
        case .control: "CONTROL"
        case .directory: "DIRECTORY"
        case .read: "READ"
        case .getPermissions: "GET_PERMS"
        case .watch: "WATCH"
        case .unwatch: "UNWATCH"
        case .transactionStart: "TRANSACTION_START"
        case .transactionEnd: "TRANSACTION_END"
        case .introduce: "INTRODUCE"
        case .release: "RELEASE"
        case .getDomainPath: "GET_DOMAIN_PATH"
        case .write: "WRITE"
        case .mkdir: "MKDIR"
        case .remove: "RM"
        case .setPermissions: "SET_PERMS"
        case .watchEvent: "WATCH_EVENT"
        case .error: "ERROR"
        case .isDomainIntroduced: "IS_DOMAIN_INTRODUCED"
        case .resume: "RESUME"
        case .setTarget: "SET_TARGET"
        case .resetWatches: "RESET_WATCHES"
        case .directoryPart: "DIRECTORY_PART"
        }
    }
}

/// Protocol limits from io/xs_wire.h.
public enum XenStoreLimits {
    /// `XENSTORE_PAYLOAD_MAX`: the largest `len` of a message. A longer
    /// header is a protocol violation ("Violating this is very bad").
    public static let payloadMax = Int(XENSTORE_PAYLOAD_MAX)
    /// `XENSTORE_ABS_PATH_MAX`: the longest absolute path.
    public static let absolutePathMax = Int(XENSTORE_ABS_PATH_MAX)
    /// `XENSTORE_REL_PATH_MAX`: the longest path below `/local/domain/<id>/`.
    public static let relativePathMax = Int(XENSTORE_REL_PATH_MAX)
    /// `sizeof(struct xsd_sockmsg)`: four little-endian `uint32_t`.
    public static let headerSize = MemoryLayout<xsd_sockmsg>.size
}

/// One XenStore message: `struct xsd_sockmsg` plus its payload.
public struct XenStoreMessage: Hashable, Sendable {
    /// What the message is. Replies carry the request's type, or `.error`.
    public var type: XenStoreMessageType
    /// `req_id`: chosen by the client, echoed in the reply.
    public var requestID: UInt32
    /// `tx_id`: the transaction, 0 for none; echoed in the reply.
    public var transactionID: UInt32
    /// The bytes after the header (`len` of them), at most `XENSTORE_PAYLOAD_MAX`.
    public var payload: [UInt8]

    public init(type: XenStoreMessageType, requestID: UInt32 = 0, transactionID: UInt32 = 0, payload: [UInt8] = []) {
        self.type = type
        self.requestID = requestID
        self.transactionID = transactionID
        self.payload = payload
    }

    /// A message whose payload is `strings`, each followed by a NUL (the
    /// usual shape of requests and replies, xenstore.txt "General format").
    public init(type: XenStoreMessageType, requestID: UInt32 = 0, transactionID: UInt32 = 0, strings: [String]) {
        self.init(type: type, requestID: requestID, transactionID: transactionID,
                  payload: XenStoreWire.nulTerminated(strings))
    }

    /// The header and payload as sent on a ring or socket (all fields little-endian).
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(XenStoreLimits.headerSize + payload.count)
        for v in [type.rawValue, requestID, transactionID, UInt32(truncatingIfNeeded: payload.count)] {
            XenStoreWire.appendLittleEndian(v, to: &out)
        }
        out += payload
        return out
    }
}

/// Helpers for the payload conventions of xenstore.txt.
public enum XenStoreWire {
    static func appendLittleEndian(_ v: UInt32, to out: inout [UInt8]) {
        out.append(UInt8(truncatingIfNeeded: v))
        out.append(UInt8(truncatingIfNeeded: v >> 8))
        out.append(UInt8(truncatingIfNeeded: v >> 16))
        out.append(UInt8(truncatingIfNeeded: v >> 24))
    }

    static func littleEndian(_ b: ArraySlice<UInt8>, at i: Int) -> UInt32 {
        let s = b.startIndex + i
        return UInt32(b[s]) | UInt32(b[s + 1]) << 8 | UInt32(b[s + 2]) << 16 | UInt32(b[s + 3]) << 24
    }

    /// `strings`, each followed by a NUL.
    public static func nulTerminated(_ strings: [String]) -> [UInt8] {
        var out: [UInt8] = []
        for s in strings {
            out += Array(s.utf8)
            out.append(0)
        }
        return out
    }

    /// The NUL-terminated strings at the start of `payload`, as C xenstored's
    /// `get_strings` sees them: a trailing piece without its NUL is not a
    /// string.
    public static func strings(_ payload: [UInt8]) -> [String] {
        var out: [String] = []
        var start = 0
        for (i, b) in payload.enumerated() where b == 0 {
            out.append(String(decoding: payload[start..<i], as: UTF8.self))
            start = i + 1
        }
        return out
    }

    /// The single argument of a one-argument request, or nil unless the
    /// payload holds exactly one NUL, at its end (C xenstored `onearg`).
    public static func oneArgument(_ payload: [UInt8]) -> String? {
        guard let last = payload.last, last == 0, payload.firstIndex(of: 0) == payload.count - 1 else { return nil }
        return String(decoding: payload.dropLast(), as: UTF8.self)
    }

    /// An `XS_ERROR` reply to `request`: the errno's name and a NUL, ids echoed.
    public static func errorReply(_ error: XenStoreError, to request: XenStoreMessage) -> XenStoreMessage {
        XenStoreMessage(type: .error, requestID: request.requestID, transactionID: request.transactionID,
                        strings: [error.wireName])
    }

    /// An `XS_WATCH_EVENT`: path and token, each NUL-terminated, ids 0.
    public static func watchEvent(path: String, token: String) -> XenStoreMessage {
        XenStoreMessage(type: .watchEvent, strings: [path, token])
    }
}

/// What `XenStoreFramer` produced from the bytes it was given.
public enum XenStoreFrame: Hashable, Sendable {
    /// A complete message.
    case message(XenStoreMessage)
    /// A complete frame of a type io/xs_wire.h does not define: C xenstored
    /// answers it with ENOSYS, ids echoed, and goes on.
    case unknownType(rawType: UInt32, requestID: UInt32, transactionID: UInt32)
}

/// Why a byte stream can no longer be framed: the peer must be disconnected.
public enum XenStoreFramingError: Error, Hashable, Sendable {
    /// A header announced `len > XENSTORE_PAYLOAD_MAX` (C xenstored treats the
    /// client as bad and drops it; a ring gets `XENSTORE_ERROR_PROTO`).
    case payloadTooLong(UInt32)
}

/// Splits a byte stream into messages. Accepts arbitrary chunks; holds at
/// most one partial frame (16 + `XENSTORE_PAYLOAD_MAX` bytes) between calls,
/// plus whatever the last call passed in.
public struct XenStoreFramer: Sendable {
    private var buffer: [UInt8] = []
    private var broken: XenStoreFramingError?

    public init() {}

    /// Bytes of an incomplete frame waiting for the rest.
    public var bufferedCount: Int { buffer.count }

    /// Drops any partial frame (a reconnecting ring).
    public mutating func reset() {
        buffer.removeAll()
        broken = nil
    }

    /// Appends `bytes` and returns every frame now complete, in order. After
    /// a framing error every later call throws it again.
    public mutating func feed(_ bytes: [UInt8]) throws(XenStoreFramingError) -> [XenStoreFrame] {
        if let broken { throw broken }
        buffer += bytes
        var frames: [XenStoreFrame] = []
        var offset = 0
        let h = XenStoreLimits.headerSize
        while buffer.count - offset >= h {
            let view = buffer[offset...]
            let type = XenStoreWire.littleEndian(view, at: 0)
            let requestID = XenStoreWire.littleEndian(view, at: 4)
            let transactionID = XenStoreWire.littleEndian(view, at: 8)
            let length = XenStoreWire.littleEndian(view, at: 12)
            guard length <= UInt32(XenStoreLimits.payloadMax) else {
                broken = .payloadTooLong(length)
                buffer.removeAll()
                throw .payloadTooLong(length)
            }
            guard buffer.count - offset - h >= Int(length) else { break }
            let payload = Array(buffer[(offset + h)..<(offset + h + Int(length))])
            offset += h + Int(length)
            if let t = XenStoreMessageType(rawValue: type) {
                frames.append(.message(XenStoreMessage(type: t, requestID: requestID, transactionID: transactionID,
                                                       payload: payload)))
            } else {
                frames.append(.unknownType(rawType: type, requestID: requestID, transactionID: transactionID))
            }
        }
        if offset > 0 { buffer.removeFirst(offset) }
        return frames
    }
}
