/**
 * Whether PostgreSQL's text holds `s` as it is: a NUL fails the statement, and node-postgres silently turns an unpaired
 * UTF-16 surrogate into U+FFFD (the row then differs from what was sent).
 */
export const isStorableText = (s: string): boolean => !s.includes('\0') && s.isWellFormed();
