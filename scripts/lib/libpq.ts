// libpq connection strings (keyword='value' pairs) for psql, pg_dump and pg_restore. Every
// value is quoted by libpq's own rule, so no value (a root path, a host name) can end its
// setting and add another: "/opt/x sslmode=disable" stays one path instead of turning a
// verified connection into a plain-text one.

/** Keyword/value settings as one libpq string: each value in single quotes, with ' and \ escaped by a backslash. */
export function conninfo(settings: Record<string, string | number>): string {
  return Object.entries(settings)
    .map(([keyword, value]) => `${keyword}='${String(value).replace(/['\\]/g, '\\$&')}'`)
    .join(' ');
}
