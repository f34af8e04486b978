import Hummingbird
import PVHAPIModels

extension APIRoutes {
    /// Methods a client may send to a documented path that does not serve
    /// them (HEAD is left to the server: it answers it for GET; QUERY is
    /// the safe method with a body of draft-ietf-httpbis-safe-method-w-body).
    static let otherMethods: [HTTPRequest.Method] = [.get, .put, .post, .delete, .patch, .options, .trace]
        + [HTTPRequest.Method("QUERY")].compactMap { $0 }

    /// Every documented path answers the methods it does not serve with
    /// 405 and an `Allow` header (RFC 9110 section 15.5.6), not 404: the
    /// path exists. Registered after every route, from the same table.
    public static func registerMethodNotAllowed(on router: Router<BasicRequestContext>) {
        let byPath = Dictionary(grouping: all, by: \.path)
        for (path, routes) in byPath {
            let served = Set(routes.map(\.method))
            let allow = routes.map(\.method).sorted().joined(separator: ", ")
            let routerPath = RouterPath(path.replacingOccurrences(of: "{path}", with: "**"))
            for method in otherMethods where !served.contains(method.rawValue) {
                router.on(routerPath, method: method) { _, _ in
                    var response = try APIRouter.errorResponse(APIError(.methodNotAllowed, "\(method.rawValue) \(path): not served; \(allow) are"))
                    response.headers[.allow] = allow
                    return response
                }
            }
        }
    }
}
