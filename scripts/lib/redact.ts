// Every secret the tool learns (INSTANCE_SECRET, passwords, admin keys) is registered here the
// moment it is read or generated, and every line that leaves the process goes through redact().
//
// A secret is masked in every form it takes in what we print: as is, percent-encoded in a URL's
// userinfo (POSTGRES_URL; any character may be encoded, in upper or lower case hex) and escaped
// in JSON (`"` and `\` behind backslashes, any number of times for JSON inside JSON). Each of
// its characters matches any of those spellings, so mixed forms are masked too.
//
// A short secret (a few characters) is also a common substring: masked wherever it occurs it
// would blank out unrelated words and numbers. So a secret shorter than SHORT is masked only as
// a whole token, where it is neither preceded nor followed by a letter or a digit — which is how
// a value stands in `KEY=value`, a URL's `user:password@` or a JSON string.

const patterns = new Map<string, string>();
let combined: RegExp | undefined;
const MASK = '********';
const SHORT = 6;

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');

/** Every spelling of one character: itself, percent-encoded (any hex case), JSON-escaped. */
function characterPattern(char: string): string {
  const percent = [...new TextEncoder().encode(char)].map(byte => `%${[...byte.toString(16).padStart(2, '0')].map(h => (/[a-f]/.test(h) ? `[${h}${h.toUpperCase()}]` : h)).join('')}`).join('');
  const json = char === '"' || char === '\\' ? `\\\\*${escapeRegExp(char)}` : JSON.stringify(char).length > 3 ? escapeRegExp(JSON.stringify(char).slice(1, -1)) : undefined;
  return `(?:${[escapeRegExp(char), percent, json].filter(Boolean).join('|')})`;
}

function secretPattern(secret: string): string {
  const body = [...secret].map(characterPattern).join('');
  return [...secret].length < SHORT ? `(?<![A-Za-z0-9])${body}(?![A-Za-z0-9])` : body;
}

export function registerSecret(value: string | undefined): void {
  if (!value || patterns.has(value)) return;
  patterns.set(value, secretPattern(value));
  // Longest first, so a secret that contains another is masked whole.
  const ordered = [...patterns.entries()].sort(([a], [b]) => b.length - a.length).map(([, pattern]) => pattern);
  combined = new RegExp(ordered.join('|'), 'g');
}

export function redact(text: string): string {
  return combined ? text.replace(combined, MASK) : text;
}
