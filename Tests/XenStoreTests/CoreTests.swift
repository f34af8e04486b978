import Testing
import XenABI
import XenStore

@Suite("XenStore core semantics")
struct CoreTests {
    typealias H = Harness

    @Test("write creates missing parents; read, directory; replies echo ids")
    func createdParents() {
        var h = Harness()
        let w = h.write(H.dom0, "/a/b/c", "hello")
        #expect(w.ok && w.strings == ["OK"])
        #expect(w.reply.requestID == 7 && w.reply.type == .write)
        #expect(h.read(H.dom0, "/a/b/c").text == "hello")
        #expect(h.read(H.dom0, "/a/b").text == "")
        #expect(h.send(H.dom0, .directory, ["/a"]).strings == ["b"])
        h.write(H.dom0, "/a/x", "1")
        #expect(h.send(H.dom0, .directory, ["/a"]).strings == ["b", "x"])
        #expect(h.send(H.dom0, .directory, ["/a/b/c"]).reply.payload.isEmpty)
        #expect(h.read(H.dom0, "/nope").error == .enoent)
        #expect(h.send(H.dom0, .mkdir, ["/m/n"]).ok)
        #expect(h.send(H.dom0, .mkdir, ["/m/n"]).ok)  // exists: fine
        #expect(h.read(H.dom0, "/m/n").text == "")
        #expect(h.core.invariantViolations().isEmpty)
    }

    @Test("values are bytes: NULs inside a WRITE value are kept")
    func binaryValues() {
        var h = Harness()
        h.send(H.dom0, XenStoreMessage(type: .write, payload: XenStoreWire.nulTerminated(["/bin"]) + [1, 0, 2, 0]))
        #expect(h.read(H.dom0, "/bin").reply.payload == [1, 0, 2, 0])
    }

    @Test("rm is recursive, missing node with existing parent is OK, / is EINVAL")
    func removal() {
        var h = Harness()
        h.write(H.dom0, "/a/b/c", "1")
        h.write(H.dom0, "/a/b/d", "2")
        #expect(h.send(H.dom0, .remove, ["/a/b"]).ok)
        #expect(h.read(H.dom0, "/a/b/c").error == .enoent)
        #expect(h.send(H.dom0, .directory, ["/a"]).strings == [])
        #expect(h.send(H.dom0, .remove, ["/a/zz"]).ok)
        #expect(h.send(H.dom0, .remove, ["/q/zz"]).error == .enoent)
        #expect(h.send(H.dom0, .remove, ["/"]).error == .einval)
        #expect(h.core.invariantViolations().isEmpty)
        #expect(h.core.nodeCount == 2)
    }

    @Test("permissions: EACCES for others, owner implicit rights, dom0 bypass, no leaking ENOENT")
    func permissions() {
        var h = Harness()
        h.makeHome(1)
        // The guest owns its home: it writes and reads there, relative paths included.
        #expect(h.write(H.d1, "device/vif/0/state", "1").ok)
        #expect(h.read(H.d1, "/local/domain/1/device/vif/0/state").text == "1")
        // Nodes it creates are owned by it, perms otherwise copied from the parent.
        #expect(h.send(H.d1, .getPermissions, ["device/vif/0"]).strings == ["n1"])
        // Another guest sees nothing, and cannot even learn what is missing.
        #expect(h.read(H.d2, "/local/domain/1/device/vif/0/state").error == .eacces)
        #expect(h.read(H.d2, "/local/domain/1/nothing").error == .eacces)
        #expect(h.write(H.d2, "/local/domain/1/x", "y").error == .eacces)
        #expect(h.write(H.d1, "/outside", "y").error == .eacces)
        #expect(h.read(H.d1, "/").error == .eacces)
        // Grant d2 read on one node.
        #expect(h.send(H.d1, .setPermissions, ["device/vif/0/state", "n1", "r2"]).ok)
        #expect(h.read(H.d2, "/local/domain/1/device/vif/0/state").text == "1")
        #expect(h.write(H.d2, "/local/domain/1/device/vif/0/state", "2").error == .eacces)
        // The owner's own letter does not restrict it.
        #expect(h.send(H.d1, .setPermissions, ["device/vif/0/state", "n1"]).ok)
        #expect(h.write(H.d1, "device/vif/0/state", "3").ok)
        // An unprivileged owner may not give a node away; others may not set perms.
        #expect(h.send(H.d1, .setPermissions, ["device", "n2"]).error == .eperm)
        #expect(h.send(H.d2, .setPermissions, ["/local/domain/1/device", "n2"]).error == .eacces)
        // dom0 bypasses everything and may change the owner.
        #expect(h.read(H.dom0, "/local/domain/1/device/vif/0/state").text == "3")
        #expect(h.send(H.dom0, .setPermissions, ["/local/domain/1/device", "r0", "b2"]).ok)
        #expect(h.send(H.dom0, .getPermissions, ["/local/domain/1/device"]).strings == ["r0", "b2"])
        #expect(h.write(H.d2, "/local/domain/1/device/new", "x").ok)
        #expect(h.send(H.d2, .getPermissions, ["/local/domain/1/device/new"]).strings == ["r2", "b2"])
        // dom0-created nodes keep the parent's perms verbatim.
        h.write(H.dom0, "/local/domain/1/device/bydom0", "x")
        #expect(h.send(H.dom0, .getPermissions, ["/local/domain/1/device/bydom0"]).strings == ["r0", "b2"])
        // Bad perm strings.
        #expect(h.send(H.dom0, .setPermissions, ["/local/domain/1"]).error == .einval)
        #expect(h.send(H.dom0, .setPermissions, ["/local/domain/1", "q1"]).error == .einval)
        #expect(h.core.invariantViolations().isEmpty)
    }

    @Test("SET_TARGET gives a domain its target's rights")
    func target() {
        var h = Harness()
        h.makeHome(1)
        h.send(H.dom0, .introduce, ["1", "0", "1"])
        h.send(H.dom0, .introduce, ["2", "0", "1"])
        #expect(h.read(H.d2, "/local/domain/1").error == .eacces)
        #expect(h.send(H.dom0, .setTarget, ["2", "1"]).ok)
        #expect(h.read(H.d2, "/local/domain/1").ok)
        #expect(h.send(H.d1, .setTarget, ["2", "1"]).error == .eacces)
    }

    @Test("transactions: isolation, conflict → EAGAIN with nothing applied, abort, ids")
    func transactions() {
        var h = Harness()
        h.write(H.dom0, "/t/a", "0")
        let tx = h.startTransaction(H.dom0)
        #expect(tx != 0)
        #expect(h.write(H.dom0, "/t/a", "1", tx: tx).ok)
        #expect(h.write(H.dom0, "/t/new/deep", "n", tx: tx).ok)
        #expect(h.read(H.dom0, "/t/a", tx: tx).text == "1")
        #expect(h.read(H.dom0, "/t/a").text == "0")  // not visible outside
        #expect(h.read(H.dom0, "/t/new").error == .enoent)
        #expect(h.send(H.dom0, .transactionEnd, ["T"], tx: tx).ok)
        #expect(h.read(H.dom0, "/t/a").text == "1")
        #expect(h.read(H.dom0, "/t/new/deep").text == "n")
        // Conflict: something the transaction read changed outside.
        let t2 = h.startTransaction(H.dom0)
        #expect(h.read(H.dom0, "/t/a", tx: t2).text == "1")
        #expect(h.write(H.dom0, "/t/b", "2", tx: t2).ok)
        #expect(h.write(H.dom0, "/t/x", "3", tx: t2).ok)
        h.write(H.dom0, "/t/a", "outside")
        #expect(h.send(H.dom0, .transactionEnd, ["T"], tx: t2).error == .eagain)
        #expect(h.read(H.dom0, "/t/b").error == .enoent)  // no partial commit
        #expect(h.read(H.dom0, "/t/x").error == .enoent)
        #expect(h.send(H.dom0, .transactionEnd, ["T"], tx: t2).error == .enoent)  // gone
        // Abort.
        let t3 = h.startTransaction(H.dom0)
        h.write(H.dom0, "/t/c", "x", tx: t3)
        #expect(h.send(H.dom0, .transactionEnd, ["F"], tx: t3).ok)
        #expect(h.read(H.dom0, "/t/c").error == .enoent)
        // Unrelated concurrent writes do not conflict.
        let t4 = h.startTransaction(H.dom0)
        h.write(H.dom0, "/t/a", "mine", tx: t4)
        h.write(H.dom0, "/other", "theirs")
        #expect(h.send(H.dom0, .transactionEnd, ["T"], tx: t4).ok)
        // Errors: unknown id, bad argument, nested start, ids per connection.
        #expect(h.read(H.dom0, "/t/a", tx: 999).error == .enoent)
        let t5 = h.startTransaction(H.dom0)
        #expect(h.send(H.dom0, .transactionEnd, ["X"], tx: t5).error == .einval)
        #expect(h.send(H.dom0, .transactionStart, [""], tx: t5).error == .ebusy)
        #expect(h.read(H.d1, "/t/a", tx: t5).error == .enoent)  // not d1's transaction
        #expect(h.send(H.dom0, .transactionEnd, ["T"]).error == .enoent)
        #expect(h.core.invariantViolations().isEmpty)
    }

    @Test("a transactional rm and re-create commit atomically")
    func transactionalRemove() {
        var h = Harness()
        h.write(H.dom0, "/r/a/b", "1")
        let tx = h.startTransaction(H.dom0)
        #expect(h.send(H.dom0, .remove, ["/r/a"], tx: tx).ok)
        #expect(h.read(H.dom0, "/r/a/b").text == "1")
        #expect(h.send(H.dom0, .transactionEnd, ["T"], tx: tx).ok)
        #expect(h.read(H.dom0, "/r/a/b").error == .enoent)
        #expect(h.core.invariantViolations().isEmpty)
    }

    @Test("DIRECTORY_PART: generation, pieces by byte offset, terminating empty string")
    func directoryPart() {
        var h = Harness()
        for i in 0..<3 { h.write(H.dom0, "/d/child\(i)", "") }
        let all = h.send(H.dom0, .directoryPart, ["/d", "0"])
        let s = all.strings
        #expect(s.count == 5 && s[1...3] == ["child0", "child1", "child2"] && s[4] == "")
        let gen = s[0]
        #expect(UInt64(gen) != nil)
        let part = h.send(H.dom0, .directoryPart, ["/d", "7"]).strings  // after "child0\0"
        #expect(part == [gen, "child1", "child2", ""])
        #expect(h.send(H.dom0, .directoryPart, ["/d", "21"]).strings == [gen, ""])
        h.write(H.dom0, "/d/child3", "")
        #expect(h.send(H.dom0, .directoryPart, ["/d", "0"]).strings[0] != gen)
        #expect(h.send(H.dom0, .directoryPart, ["/d"]).error == .einval)
        // Many children: pieces never exceed the payload limit and concatenate to DIRECTORY.
        for i in 0..<300 { h.write(H.dom0, "/big/a-rather-long-child-name-\(i)", "") }
        var offset = 0
        var names: [String] = []
        while true {
            let r = h.send(H.dom0, .directoryPart, ["/big", "\(offset)"])
            #expect(r.reply.payload.count <= XenStoreLimits.payloadMax)
            var parts = r.strings.dropFirst()
            let done = parts.last == ""
            if done { parts = parts.dropLast() }
            names += parts
            offset += parts.reduce(0) { $0 + $1.utf8.count + 1 }
            if done || parts.isEmpty { break }
        }
        #expect(names == (0..<300).map { "a-rather-long-child-name-\($0)" })
        // DIRECTORY itself cannot answer: the list exceeds XENSTORE_PAYLOAD_MAX (C: E2BIG).
        #expect(h.send(H.dom0, .directory, ["/big"]).error == .e2big)
    }

    @Test("watches: initial event, subtree, relative reporting, duplicates, unwatch")
    func watches() {
        var h = Harness()
        h.makeHome(1)
        let w = h.send(H.d1, .watch, ["device", "tok"])
        #expect(w.ok && w.strings == ["OK"])
        #expect(w.events(for: H.d1) == ["device tok"])  // initial, relative as given
        #expect(h.send(H.d1, .watch, ["device", "tok"]).error == .eexist)
        let e = h.write(H.d1, "device/vif/0/state", "1")
        #expect(e.events(for: H.d1) == ["device/vif/0/state tok"])
        // dom0 watching absolutely sees the absolute path.
        h.send(H.dom0, .watch, ["/local/domain/1", "abs"])
        let e2 = h.write(H.dom0, "/local/domain/1/device/x", "1")
        #expect(e2.events(for: H.dom0) == ["/local/domain/1/device/x abs"])
        #expect(e2.events(for: H.d1) == ["device/x tok"])
        // Writes elsewhere do not fire.
        #expect(h.write(H.dom0, "/local/domain/10", "x").events.isEmpty)
        #expect(h.write(H.dom0, "/local/domain/1x", "x").events.isEmpty)
        #expect(h.send(H.d1, .unwatch, ["device", "tok"]).ok)
        #expect(h.send(H.d1, .unwatch, ["device", "tok"]).error == .enoent)
        #expect(h.write(H.d1, "device/y", "1").events(for: H.d1).isEmpty)
        #expect(h.send(H.d1, .watch, ["device"]).error == .einval)
        #expect(h.send(H.d1, .watch, ["device", "t", "2"]).error == .einval)  // no WATCHDEPTH feature
        // RESET_WATCHES drops them all.
        h.send(H.d1, .watch, ["a", "1"])
        h.send(H.d1, .resetWatches, [])
        #expect(h.write(H.d1, "a", "1").events(for: H.d1).isEmpty)
    }

    /// C xenstored rm_node: the removed node matches watches on it and its
    /// ancestors; each node below matches only watches on exactly itself.
    @Test("removing a watched node's parent fires the watch with the watched node's path")
    func parentRemoval() {
        var h = Harness()
        h.write(H.dom0, "/p/q/r", "1")
        h.send(H.dom0, .watch, ["/p/q/r", "deep"])
        h.send(H.dom0, .watch, ["/p/q", "mid"])
        h.send(H.dom0, .watch, ["/p/other", "other"])
        let e = h.send(H.dom0, .remove, ["/p"])
        let got = Set(e.events(for: H.dom0))
        #expect(got == ["/p/q/r deep", "/p/q mid"])
        #expect(e.events(for: H.dom0).count == 2)
    }

    @Test("watch events require read permission on the node (or its parent)")
    func eventPermissions() {
        var h = Harness()
        h.makeHome(1)
        h.send(H.d2, .watch, ["/local/domain/1", "spy"])
        #expect(h.write(H.d1, "secret", "x").events(for: H.d2).isEmpty)
        h.write(H.d1, "public", "x")
        h.send(H.d1, .setPermissions, ["public", "n1", "r2"])
        #expect(h.write(H.d1, "public", "y").events(for: H.d2) == ["/local/domain/1/public spy"])
    }

    @Test("transactional writes fire only on commit, not on abort or conflict")
    func transactionalEvents() {
        var h = Harness()
        h.send(H.dom0, .watch, ["/w", "tok"])
        let tx = h.startTransaction(H.dom0)
        #expect(h.write(H.dom0, "/w/a", "1", tx: tx).events.isEmpty)
        let c = h.send(H.dom0, .transactionEnd, ["T"], tx: tx)
        #expect(c.events(for: H.dom0) == ["/w/a tok"])
        let t2 = h.startTransaction(H.dom0)
        h.write(H.dom0, "/w/b", "1", tx: t2)
        #expect(h.send(H.dom0, .transactionEnd, ["F"], tx: t2).events.isEmpty)
        let t3 = h.startTransaction(H.dom0)
        _ = h.read(H.dom0, "/w/a", tx: t3)
        h.write(H.dom0, "/w/c", "1", tx: t3)
        h.write(H.dom0, "/w/a", "2")
        #expect(h.send(H.dom0, .transactionEnd, ["T"], tx: t3).events.isEmpty)
    }

    @Test("@introduceDomain / @releaseDomain and the domain requests")
    func specialWatches() {
        var h = Harness()
        h.send(H.dom0, .watch, ["@introduceDomain", "i"])
        h.send(H.dom0, .watch, ["@releaseDomain", "r"])
        h.send(H.d1, .watch, ["@releaseDomain", "guest"])
        let i = h.send(H.dom0, .introduce, ["5", "1234", "3"])
        #expect(i.events(for: H.dom0) == ["@introduceDomain i"])
        #expect(h.send(H.dom0, .isDomainIntroduced, ["5"]).strings == ["T"])
        #expect(h.send(H.dom0, .isDomainIntroduced, ["6"]).strings == ["F"])
        #expect(h.send(H.dom0, .resume, ["5"]).ok)
        #expect(h.send(H.dom0, .resume, ["6"]).error == .enoent)
        let r = h.send(H.dom0, .release, ["5"])
        #expect(r.events(for: H.dom0) == ["@releaseDomain r"])
        #expect(r.events(for: H.d1).isEmpty)  // special nodes: dom0-only unless granted
        #expect(h.send(H.dom0, .release, ["5"]).error == .enoent)
        // Granting d1 read on @releaseDomain lets it see the event.
        #expect(h.send(H.dom0, .setPermissions, ["@releaseDomain", "n0", "r1"]).ok)
        #expect(h.send(H.dom0, .getPermissions, ["@releaseDomain"]).strings == ["n0", "r1"])
        h.send(H.dom0, .introduce, ["5", "1", "1"])
        #expect(h.send(H.dom0, .release, ["5"]).events(for: H.d1) == ["@releaseDomain guest"])
        // Privileged requests from a guest.
        for t: XenStoreMessageType in [.introduce, .release, .isDomainIntroduced, .resume, .setTarget, .control] {
            #expect(h.send(H.d1, t, ["1"]).error == .eacces)
        }
        #expect(h.send(H.d1, .getDomainPath, ["7"]).strings == ["/local/domain/7"])
        #expect(h.send(H.d1, .getDomainPath, ["x"]).error == .einval)
        #expect(h.send(H.dom0, .release, ["0"]).error == .einval)
        #expect(h.send(H.dom0, .resume, ["0"]).error == .einval)
        #expect(h.send(H.dom0, .introduce, ["7", "1", "0"]).error == .einval)  // port must be > 0
        #expect(h.send(H.dom0, .introduce, ["70000", "1", "1"]).error == .einval)
        #expect(h.send(H.dom0, .introduce, ["7", "1"]).error == .einval)
        #expect(h.send(H.dom0, .isDomainIntroduced, ["32752"]).strings == ["T"])  // DOMID_SELF
        // Releasing a domain drops its watches (C do_release), so cleaning up its nodes is silent.
        h.send(H.dom0, .introduce, ["1", "1", "1"])
        h.send(H.d1, .watch, ["/gone", "t"])
        h.send(H.dom0, .release, ["1"])
        #expect(h.write(H.dom0, "/gone", "x").events(for: H.d1).isEmpty)
    }

    @Test("CONTROL: print logs, check validates, unknown is EINVAL; guests' server types are ENOSYS")
    func control() {
        var h = Harness()
        #expect(h.send(H.dom0, .control, ["print", "hello"]).ok)
        #expect(h.core.log == ["hello"])
        #expect(h.send(H.dom0, .control, ["check"]).ok)
        #expect(h.send(H.dom0, .control, ["live-update"]).error == .einval)
        #expect(h.send(H.dom0, .control, []).error == .einval)
        #expect(h.send(H.d1, .watchEvent, ["a", "b"]).error == .enosys)
        #expect(h.send(H.d1, .error, ["EINVAL"]).error == .enosys)
    }

    @Test("malformed arguments are EINVAL")
    func malformed() {
        var h = Harness()
        #expect(h.send(H.dom0, XenStoreMessage(type: .read, payload: Array("/a".utf8))).error == .einval)
        #expect(h.send(H.dom0, XenStoreMessage(type: .read, payload: Array("/a\0/b\0".utf8))).error == .einval)
        #expect(h.send(H.dom0, XenStoreMessage(type: .write, payload: Array("/a".utf8))).error == .einval)
        #expect(h.send(H.dom0, .read, ["/a//b"]).error == .einval)
        #expect(h.send(H.dom0, .read, ["@introduceDomain"]).error == .einval)
        #expect(h.send(H.dom0, .write, ["/a b", "v"]).error == .einval)
    }

    @Test("quotas: nodes, node size, watches, transactions, permissions (guests only)")
    func quotas() {
        var q = XenStoreQuota.default
        q.nodes = 5
        q.watches = 2
        q.transactions = 1
        q.permissions = 2
        q.nodeSize = 2048  // C xenstored's default, to test the accounting at its limit
        var h = Harness(quota: q)
        h.makeHome(1)
        #expect(h.write(H.d1, "a", "").ok)  // d1 now owns /local/domain/1 and a
        #expect(h.write(H.d1, "b/c/d", "").ok)  // 5
        #expect(h.write(H.d1, "e", "").error == .enospc)
        #expect(h.write(H.d1, "a", "rewriting is fine").ok)
        #expect(h.write(H.dom0, "/local/domain/1/e", "").ok)  // dom0 is not limited
        // Node size: C's default 2048 bytes per node record.
        #expect(h.write(H.d1, "a", String(repeating: "x", count: 2100)).error == .enospc)
        #expect(h.write(H.d1, "a", String(repeating: "x", count: 1900)).ok)
        #expect(h.send(H.d1, .watch, ["a", "1"]).ok)
        #expect(h.send(H.d1, .watch, ["a", "2"]).ok)
        #expect(h.send(H.d1, .watch, ["a", "3"]).error == .enospc)
        #expect(h.startTransaction(H.d1) != 0)
        #expect(h.send(H.d1, .transactionStart, [""]).error == .enospc)
        #expect(h.send(H.d1, .setPermissions, ["a", "n1", "r2", "r3"]).error == .enospc)
        #expect(h.send(H.d1, .setPermissions, ["a", "n1", "r2"]).ok)
        // Nodes touched by one transaction.
        var q2 = XenStoreQuota.default
        q2.transactionNodes = 3
        var h3 = Harness(quota: q2)
        h3.makeHome(1)
        let t = h3.startTransaction(H.d1)
        #expect(h3.read(H.d1, "", tx: t).error == .einval)
        #expect(h3.write(H.d1, "p", "1", tx: t).ok)
        #expect(h3.write(H.d1, "q", "1", tx: t).ok)
        #expect(h3.write(H.d1, "r", "1", tx: t).error == .enospc)
        #expect(h3.send(H.d1, .transactionEnd, ["T"], tx: t).ok)
        #expect(h3.read(H.d1, "q").ok && h3.read(H.d1, "r").error == .enoent)
        // A transaction that creates too many nodes fails, at write or commit.
        var h2 = Harness(quota: q)
        h2.makeHome(1)
        let t1 = h2.startTransaction(H.d1)
        #expect(h2.write(H.d1, "x/y", "", tx: t1).ok)
        h2.write(H.dom0, "/local/domain/1/z", "")
        h2.send(H.dom0, .setPermissions, ["/local/domain/1/z", "n1"])
        h2.write(H.dom0, "/local/domain/1/z2", "")
        h2.send(H.dom0, .setPermissions, ["/local/domain/1/z2", "n1"])
        h2.write(H.dom0, "/local/domain/1/z3", "")
        h2.send(H.dom0, .setPermissions, ["/local/domain/1/z3", "n1"])
        // The home changed (children added): EAGAIN comes first here, as a conflict.
        #expect(h2.send(H.d1, .transactionEnd, ["T"], tx: t1).error == .eagain)
        #expect(h2.core.invariantViolations().isEmpty)
    }

    @Test("a disconnected client's watches and transactions are gone")
    func disconnect() {
        var h = Harness()
        h.send(H.d1, .watch, ["/x", "t"])
        h.core.disconnect(H.d1)
        #expect(h.write(H.dom0, "/x", "1").events.isEmpty)
    }
}
