import BlockFrontend
import HostIO
import NetBackend
import NetFrontend
import Testing
import XenABI

@Suite("net backend multi-queue")
struct MultiQueueTests {
    @Test("two queues: each has its rings, channels and context; TX from both reaches the link; RX is steered by flow")
    func twoQueues() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest, queues: 2, maximumQueues: 4)
        #expect(vif.backend.queueCount == 2)
        #expect(vif.backend.runtimeDevice?.threadCount == 2)
        let ports = try #require(vif.backend.backendPorts)
        #expect(Set(ports.flatMap { [$0.tx, $0.rx] }).count == 4)
        try vif.queues[0].send(Frames.ipv4(Frames.payload(11)))
        try vif.queues[1].send(Frames.ipv4(Frames.payload(22)))
        #expect(try vif.queues[0].waitForTxResponses(1).map(\.status) == [.okay])
        #expect(try vif.queues[1].waitForTxResponses(1).map(\.status) == [.okay])
        #expect(Set(vif.link.sent.map(\.bytes)) == [Frames.ipv4(Frames.payload(11)), Frames.ipv4(Frames.payload(22))])
        #expect(vif.backend.metrics[0].txPackets.load(ordering: .relaxed) == 1)
        #expect(vif.backend.metrics[1].txPackets.load(ordering: .relaxed) == 1)

        // Flows for each queue, found by the backend's own hash.
        var flows: [Int: [UInt8]] = [:]
        var port: UInt16 = 1000
        while flows.count < 2 {
            let f = Frames.ipv4(Frames.payload(40), sourcePort: port)
            let q = NetFlowHash.queue(f, queues: 2)
            if flows[q] == nil { flows[q] = f }
            port += 1
        }
        for _ in 0..<3 {
            for q in 0..<2 { vif.link.inject(NetworkFrame(bytes: try #require(flows[q]))) }
        }
        for q in 0..<2 {
            let got = try vif.queues[q].waitForFrames(3)
            #expect(got.map(\.bytes) == Array(repeating: try #require(flows[q]), count: 3))
            #expect(vif.backend.metrics[q].rxPackets.load(ordering: .relaxed) == 3)
        }
        // Frames that are not IP go to queue 0.
        var arp = Frames.mac + [0x08, 0x06]
        arp += [UInt8](repeating: 1, count: 28)
        #expect(NetFlowHash.queue(arp, queues: 2) == 0)
    }
}
