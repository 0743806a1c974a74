package workflow

// RunpodOutcome is the outcome a terminal Runpod job object means (the same
// mapping a poll applies), and false for a job that has not ended. The
// worker's webhook receiver finalizes with it.
func RunpodOutcome(rj RunpodJob) (Outcome, bool) {
	if !rj.Status.Terminal() {
		return Outcome{}, false
	}
	return terminalOutcome(rj), true
}
