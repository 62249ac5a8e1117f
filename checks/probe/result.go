package probe

// Reason is a short, bounded, CamelCase code for how a probe ended, safe to
// use as a metric label. The values are those of the database check's
// findings, which reuse them.
type Reason string

// How a probe can end. ReasonReachable is the only pass; ReasonNoUser passed
// the part that could be checked without a user (the TCP connect).
const (
	ReasonReachable          Reason = "DatabaseReachable"
	ReasonNoUser             Reason = "DatabaseNoUser"
	ReasonURLInvalid         Reason = "DatabaseURLInvalid"
	ReasonSchemeUnsupported  Reason = "DatabaseSchemeUnsupported"
	ReasonPasswordNotEncoded Reason = "DatabasePasswordNotEncoded"
	ReasonHostPublic         Reason = "DatabaseHostPublic"
	ReasonHostUnresolvable   Reason = "DatabaseHostUnresolvable"
	ReasonPortNotAllowed     Reason = "DatabasePortNotAllowed"
	ReasonConnectTimeout     Reason = "DatabaseConnectTimeout"
	ReasonConnectRefused     Reason = "DatabaseConnectRefused"
	ReasonUnreachable        Reason = "DatabaseUnreachable"
	ReasonNoResponse         Reason = "DatabaseNoResponse"
	ReasonConnectionReset    Reason = "DatabaseConnectionReset"
	ReasonConnectionClosed   Reason = "DatabaseConnectionClosed"
	ReasonTLSUnavailable     Reason = "DatabaseTLSUnavailable"
	ReasonTLSRequired        Reason = "DatabaseTLSRequired"
	ReasonTLSFailed          Reason = "DatabaseTLSFailed"
	ReasonAuthFailed         Reason = "DatabaseAuthFailed"
	ReasonNotFound           Reason = "DatabaseNotFound"
	ReasonQueryFailed        Reason = "DatabaseQueryFailed"
	ReasonProbeFailed        Reason = "DatabaseProbeFailed"
)

// Result is how the probe of one connection string ended. It does not depend
// on where the string came from, so one Result is cached and shared by every
// caller that probes the same string.
type Result struct {
	Reason Reason
	// Message says what is wrong, e.g. "database at db:5432 rejected the
	// password for user app"; empty when the probe passed.
	Message Text
	// Fix says what to do, e.g. "check the password in SOURCE".
	Fix Text
	// ChainNotVerified is set on a probe that passed with TLS whose server
	// certificate chain was not verified because the connection string
	// names a CA file: that file is in the application's pod, not here.
	ChainNotVerified bool
	// Detail is the precise cause of a failure the requester is told only
	// in general terms (refused, timed out, reset, no route: "not
	// reachable"), for the guard's log; never rendered to the requester.
	Detail string
	// Schema is, for a probe with a SchemaQuery that passed, where the
	// database's migrations stand; nil otherwise.
	Schema *SchemaState
}

// Passed reports whether every stage of the probe passed.
func (r Result) Passed() bool { return r.Reason == ReasonReachable }

// Text is a message or fix that may name the place the connection string
// came from (a Secret key, an env var), which only the caller knows. It
// reads Before, then the place if NamesSource, then After.
type Text struct {
	Before      string
	NamesSource bool
	After       string
}

// Render returns the text with source in the place's slot.
func (t Text) Render(source string) string {
	if !t.NamesSource {
		return t.Before + t.After
	}
	return t.Before + source + t.After
}

// plain is a text that does not name the place.
func plain(s string) Text { return Text{Before: s} }

// inSource is a text that names the place between before and after.
func inSource(before, after string) Text {
	return Text{Before: before, NamesSource: true, After: after}
}

func deny(reason Reason, message string, fix Text) Result {
	return Result{Reason: reason, Message: plain(message), Fix: fix}
}
