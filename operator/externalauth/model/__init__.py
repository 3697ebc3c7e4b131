"""Pure data views: specs, token Secrets, reasons, durations, conditions. No I/O."""
