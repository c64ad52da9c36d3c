package limits

import "time"

// Refusal says why a request is not admitted.
type Refusal struct {
	// Limit is the limit that refuses (a name above; the error code is
	// Limit + "_exceeded"). When several refuse, the one that frees last.
	Limit string
	// RetryAfter is when the request may be admitted, as far as Limit
	// can tell: the end of the period (midnight UTC, or the 1st of the
	// next month) when the worst case can never fit what is left of it;
	// InFlightRetry when the settlement of requests in flight may make
	// room; when the oldest request leaves the window for
	// requests_per_minute.
	RetryAfter time.Duration
	// NeverFits: the worst case alone does not fit what is left of the
	// period (spent + worst > limit, or the limit is used up); no
	// settlement can change that before the period ends. A smaller output
	// cap may fit: Left says what is left.
	NeverFits bool
	// Left is what is left of a token or dollar limit's period (limit −
	// spent, reservations in flight not deducted), for a budget refusal;
	// zero otherwise.
	Left Amount
}

// Code is the error code of the refusal: <limit>_exceeded.
func (r *Refusal) Code() string { return r.Limit + "_exceeded" }

// Message is the refusal's text for the client: what refuses and what to
// do, never a configured amount.
func (r *Refusal) Message() string {
	const retry = "; retry after the time in Retry-After"
	var what, period string
	switch r.Limit {
	case RequestsPerMinute:
		return "this client has used up its requests per minute on this proxy" + retry
	case ConcurrentRequests:
		return "this client has as many requests in flight as it may on this proxy; retry when one ends (Retry-After)"
	case TooManyClients:
		return "this proxy keeps counts for as many clients as it may, each over a limit or with requests in flight" + retry
	case TokensPerDay:
		what, period = "tokens", "today (UTC)"
	case USDPerDay:
		what, period = "budget", "today (UTC)"
	case TokensPerMonth:
		what, period = "tokens", "this month (UTC)"
	case USDPerMonth:
		what, period = "budget", "this month (UTC)"
	default:
		return "this client is over a limit on this proxy" + retry
	}
	switch {
	case !r.NeverFits:
		return "this request's worst case (its input and its output cap) does not fit this client's " + what + " for " + period +
			" while its other requests are in flight" + retry
	case r.Left.Tokens > 0 || r.Left.USD > 0:
		return "this request's worst case (its input and its output cap) does not fit what is left of this client's " + what + " for " + period +
			"; send it with a lower output cap (max_tokens) or fewer choices (n), or retry after the time in Retry-After"
	}
	return "this client has used up its " + what + " for " + period + " on this proxy" + retry
}
