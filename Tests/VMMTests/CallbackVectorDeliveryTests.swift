import Testing
import XenABI
@testable import VMM

/// The HVM_PARAM_CALLBACK_IRQ vector's delivery decisions, before each VM
/// entry (Xen: hvm_vcpu_has_pending_irq treats the vector as a level).
@Suite("Callback vector delivery (pure)")
struct CallbackVectorDeliveryTests {
    @Test("no callback vector (none set, or the vCPU has its own): nothing, and the LAPIC is never asked")
    func noVector() {
        var d = CallbackVectorDelivery()
        let action = d.beforeEntry(vector: nil, upcallPending: true, asserted: true, interruptsOpen: true) {
            Issue.record("LAPIC read without a callback vector")
            return true
        }
        #expect(action == .none(requestWindow: false))
        #expect(!d.queued)
    }

    @Test("pending: queued as ExtINT once, then the window is awaited without queuing again")
    func queuedOnceUntilWindow() {
        var d = CallbackVectorDelivery()
        #expect(d.beforeEntry(vector: 0xf3, upcallPending: true, asserted: true, interruptsOpen: true) { true } == .queueExternalInterrupt(0xf3))
        #expect(d.queued)
        // Later entries (hypercalls inside the handler, ...) before the window opens.
        for _ in 0..<3 {
            #expect(d.beforeEntry(vector: 0xf3, upcallPending: true, asserted: false, interruptsOpen: true) { true } == .none(requestWindow: true))
        }
        d.windowOpened()
        #expect(!d.queued)
    }

    @Test("a level: still pending when the window opens (the handler left it set) is injected again, with no new assertion")
    func levelTriggered() {
        var d = CallbackVectorDelivery()
        _ = d.beforeEntry(vector: 0xf3, upcallPending: true, asserted: true, interruptsOpen: true) { true }
        d.windowOpened()
        #expect(d.beforeEntry(vector: 0xf3, upcallPending: true, asserted: false, interruptsOpen: true) { true } == .queueExternalInterrupt(0xf3))
    }

    @Test("cleared by the guest when the window opens: the window request goes")
    func clearedDropsWindow() {
        var d = CallbackVectorDelivery()
        _ = d.beforeEntry(vector: 0xf3, upcallPending: true, asserted: true, interruptsOpen: true) { true }
        d.windowOpened()
        #expect(d.beforeEntry(vector: 0xf3, upcallPending: false, asserted: false, interruptsOpen: true) { true } == .none(requestWindow: false))
    }

    @Test("not pending: nothing is injected, even when asserted (Xen's vcpu_kick finds no pending IRQ)")
    func notPending() {
        var d = CallbackVectorDelivery()
        #expect(d.beforeEntry(vector: 0xf3, upcallPending: false, asserted: true, interruptsOpen: true) { true } == .none(requestWindow: false))
    }

    @Test("a LAPIC that masked LVT0 gets the vector as an edge, once per assertion")
    func lapicFallback() {
        var d = CallbackVectorDelivery()
        #expect(d.beforeEntry(vector: 0xf3, upcallPending: true, asserted: true, interruptsOpen: true) { false } == .signalLocalAPIC(0xf3))
        #expect(!d.queued)
        #expect(d.beforeEntry(vector: 0xf3, upcallPending: true, asserted: false, interruptsOpen: true) { false } == .none(requestWindow: false))
    }

    @Test("KVM already had one queued: wait for the window")
    func alreadyQueued() {
        var d = CallbackVectorDelivery()
        d.alreadyQueued()
        #expect(d.beforeEntry(vector: 0xf3, upcallPending: true, asserted: true, interruptsOpen: true) { true } == .none(requestWindow: true))
    }

    @Test("the callback vector dropped while one is queued: keep the window until it is delivered")
    func vectorGoneWhileQueued() {
        var d = CallbackVectorDelivery()
        _ = d.beforeEntry(vector: 0xf3, upcallPending: true, asserted: true, interruptsOpen: true) { true }
        #expect(d.beforeEntry(vector: nil, upcallPending: true, asserted: false, interruptsOpen: true) { true } == .none(requestWindow: true))
    }
}

/// Which way an upcall goes, for every HVM_PARAM_CALLBACK_IRQ type and with
/// or without a per-vCPU vector (hvm_assert_evtchn_irq).
@Suite("Upcall routes (pure)")
struct UpcallRouteTests {
    @Test("a per-vCPU vector wins over any callback; else a callback vector; else nothing")
    func routes() {
        let vias: [HVMCallbackVia] = [.none, .gsi(5), .pciINTx(0x1234), .vector(0xf3), .unknown(7 << 56)]
        for via in vias {
            #expect(UpcallRoute(ownVector: 0xe0, callback: via) == .localAPIC(0xe0), "\(via)")
        }
        #expect(UpcallRoute(ownVector: nil, callback: .vector(0xf3)) == .callbackVector)
        for via in [HVMCallbackVia.none, .gsi(5), .pciINTx(0x1234), .unknown(7 << 56)] {
            #expect(UpcallRoute(ownVector: nil, callback: via) == .none, "\(via)")
        }
    }

    @Test("the parameter's encodings decode to those callbacks (hvm_set_callback_via)")
    func parameterValues() {
        #expect(HVMCallbackVia(parameterValue: 0) == .none)
        #expect(HVMCallbackVia(parameterValue: 9) == .gsi(9))
        #expect(HVMCallbackVia(parameterValue: 1 << 56 | 0x1234) == .pciINTx(0x1234))
        #expect(HVMCallbackVia(parameterValue: 2 << 56 | 0xf3) == .vector(0xf3))
    }

    @Test("interrupts closed (IF clear or a shadow): nothing queued, the window asked for; queued once it opens")
    func closed() {
        var d = CallbackVectorDelivery()
        var asked = false
        let action = d.beforeEntry(vector: 0xf3, upcallPending: true, asserted: true, interruptsOpen: false) {
            asked = true
            return true
        }
        #expect(action == .none(requestWindow: true))
        #expect(!asked && !d.queued)
        d.windowOpened()
        #expect(d.beforeEntry(vector: 0xf3, upcallPending: true, asserted: false, interruptsOpen: true) { true } == .queueExternalInterrupt(0xf3))
    }
}
