import CXen

/// A xenbus device end's state (`enum xenbus_state`, xen/io/xenbus.h), as
/// written in decimal to `<end>/state` in XenStore.
public enum XenbusState: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case unknown
    case initialising
    /// Backend: ready for the frontend's details (features written).
    case initWait
    /// Frontend: ring-ref / event-channel written.
    case initialised
    case connected
    case closing
    case closed
    case reconfiguring
    case reconfigured

    public init?(rawValue: UInt32) {
        switch rawValue {
        case XenbusStateUnknown.rawValue: self = .unknown
        case XenbusStateInitialising.rawValue: self = .initialising
        case XenbusStateInitWait.rawValue: self = .initWait
        case XenbusStateInitialised.rawValue: self = .initialised
        case XenbusStateConnected.rawValue: self = .connected
        case XenbusStateClosing.rawValue: self = .closing
        case XenbusStateClosed.rawValue: self = .closed
        case XenbusStateReconfiguring.rawValue: self = .reconfiguring
        case XenbusStateReconfigured.rawValue: self = .reconfigured
        default: return nil
        }
    }

    public var rawValue: UInt32 {
        switch self {
        case .unknown: XenbusStateUnknown.rawValue
        case .initialising: XenbusStateInitialising.rawValue
        case .initWait: XenbusStateInitWait.rawValue
        case .initialised: XenbusStateInitialised.rawValue
        case .connected: XenbusStateConnected.rawValue
        case .closing: XenbusStateClosing.rawValue
        case .closed: XenbusStateClosed.rawValue
        case .reconfiguring: XenbusStateReconfiguring.rawValue
        case .reconfigured: XenbusStateReconfigured.rawValue
        }
    }

    /// Parses a `state` node's value. Anything but a decimal number of a
    /// known state (the frontend is the guest's: hostile) is nil, which the
    /// backend treats as `unknown`, as Linux's xenbus_read_driver_state does.
    public init?(storeValue: String) {
        guard !storeValue.isEmpty, storeValue.count <= 10, storeValue.allSatisfy(\.isASCII),
              let raw = UInt32(storeValue) else { return nil }
        self.init(rawValue: raw)
    }

    public var storeValue: String { String(rawValue) }

    public var description: String {
        switch self {
        case .unknown: "Unknown"
        case .initialising: "Initialising"
        case .initWait: "InitWait"
        case .initialised: "Initialised"
        case .connected: "Connected"
        case .closing: "Closing"
        case .closed: "Closed"
        case .reconfiguring: "Reconfiguring"
        case .reconfigured: "Reconfigured"
        }
    }
}

/// What a backend does when the frontend's state changes: the xenbus
/// handshake of xen/io/xenbus.h and Linux's xenbus backends (e.g.
/// xen-blkback's frontend_changed), as a pure function so it is tested
/// without a store.
///
/// Backend:  Initialising → InitWait (features published)
/// Frontend: Initialising → Initialised (ring-ref, event-channel published)
/// Backend:  InitWait → Connected (after mapping the frontend's ring)
/// Either:   → Closing → Closed; a frontend back at Initialising after
///           Closed restarts the handshake (guest reboot of the driver).
public enum XenbusHandshake {
    public enum Action: Equatable, Sendable {
        /// Nothing to do.
        case none
        /// Read the frontend's details, connect, then switch to Connected.
        case connect
        /// Tear the connection down and switch to the given state.
        case disconnect(then: XenbusState)
        /// Just switch to the given state.
        case switchTo(XenbusState)
    }

    public static func onFrontendChange(backend: XenbusState, frontend: XenbusState?) -> Action {
        switch frontend ?? .unknown {
        case .initialising:
            // A frontend starting (again) after we closed: offer the device anew.
            return backend == .closed ? .switchTo(.initWait) : .none
        case .initialised, .connected:
            switch backend {
            case .initWait: return .connect
            case .connected, .closing, .closed, .unknown, .initialising, .initialised, .reconfiguring, .reconfigured:
                return .none
            }
        case .closing:
            return backend == .closing || backend == .closed ? .none : .disconnect(then: .closing)
        case .closed:
            // The frontend is gone: finish closing, and stay ready for it to return.
            return backend == .closed ? .none : .disconnect(then: .closed)
        case .unknown:
            // The node was removed (the driver unloaded or the guest died).
            return backend == .closed ? .none : .disconnect(then: .closed)
        case .initWait, .reconfiguring, .reconfigured:
            // Not states a frontend takes in this handshake: ignore them.
            return .none
        }
    }
}
