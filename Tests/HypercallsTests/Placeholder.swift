import Testing
@testable import Hypercalls
@Test func probeValues() { print("PROBE", probe()) }
