package accessv1

// How a collector proves who it is, and what one call may carry. The
// analyzer enforces them; collectors shape their calls by them.
const (
	// Audience is the audience of the service-account token a collector
	// sends (a projected token: never the API server's own audience, so the
	// token cannot be replayed against the API server, nor an API token
	// against the analyzer).
	Audience = "eddy.io/access-intake"
	// AuthorizationMetadata carries "Bearer <token>" in each call's gRPC
	// metadata.
	AuthorizationMetadata = "authorization"
	// MaxMessageBytes bounds one ShipRequest as received by the analyzer;
	// collectors batch windows under it.
	MaxMessageBytes = 16 << 20
	// MaxPathBytes bounds a FileAccess path; longer paths are refused.
	MaxPathBytes = 4096
	// MaxReadRanges bounds a FileAccess's read_ranges: 64Ki ranges of 16
	// bytes each fill 1 MiB of a message. Collectors send the first ones
	// and count the rest in read_ranges_dropped; analyzers refuse more.
	MaxReadRanges = 1 << 16
)
