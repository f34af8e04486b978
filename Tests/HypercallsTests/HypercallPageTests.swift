import Hypercalls
import Testing

@Test func hypercallPageStubs() {
    let page = HypercallPage.make()
    #expect(page.count == 4096)
    #expect(Array(page[0..<8]) == [0xB8, 0, 0, 0, 0, 0xE7, 0xEA, 0xC3])
    // Entry 29 (sched_op) at 29 * 32.
    #expect(Array(page[928..<936]) == [0xB8, 29, 0, 0, 0, 0xE7, 0xEA, 0xC3])
    #expect(Array(page[4064..<4072]) == [0xB8, 127, 0, 0, 0, 0xE7, 0xEA, 0xC3])
    for i in 0..<128 {
        #expect(page[i * 32 + 8..<i * 32 + 32].allSatisfy { $0 == 0xCC })
    }
    #expect(HypercallPage.make(port: 0x80)[6] == 0x80)
}
