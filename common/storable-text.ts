/**
 * Whether PostgreSQL's text holds `s` as it is: a NUL fails the statement, and node-postgres silently turns an unpaired
 * UTF-16 surrogate into U+FFFD (the row then differs from what was sent).
 */
export const isStorableText = (s: string): boolean => !s.includes('\0') && s.isWellFormed();

/** `s` with each NUL and unpaired surrogate replaced by U+FFFD: for a record that must be kept whatever it holds. */
export const storableText = (s: string): string =>
  isStorableText(s) ? s : s.replaceAll('\0', '\uFFFD').toWellFormed();
