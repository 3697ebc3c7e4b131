"""Pure decisions: is a refresh due, what a provider answer means, backoff. No I/O."""
