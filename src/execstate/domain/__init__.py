"""Domain values shared by every stage: money, instruments, ids, events, errors."""
