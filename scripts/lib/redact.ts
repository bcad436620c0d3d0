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
//
// Cost: one regular expression of every spelling of every secret is large, and V8 compiles it
// anew each time it changes — tens of milliseconds, once per secret learned, which made a
// 10-host run spend seconds here. Most text holds neither a %XX escape nor a backslash, so only
// the literal spelling can occur in it: that text is masked with plain string search, and the
// expression is built only when some text needs it, once per set of secrets.

const secrets = new Map<string, string>();
let longestFirst: string[] = [];
let combined: RegExp | undefined;
const MASK = '********';
const SHORT = 6;

const isShort = (secret: string) => [...secret].length < SHORT;
const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
const isAlphanumeric = (char: string | undefined) => char !== undefined && /[A-Za-z0-9]/.test(char);
/** Text in which a secret may be spelled other than literally: a percent escape or a JSON escape. */
const mayBeEscaped = (text: string) => text.includes('\\') || /%[0-9a-fA-F]{2}/.test(text);

/** Every spelling of one character: itself, percent-encoded (any hex case), JSON-escaped. */
function characterPattern(char: string): string {
  const percent = [...new TextEncoder().encode(char)].map(byte => `%${[...byte.toString(16).padStart(2, '0')].map(h => (/[a-f]/.test(h) ? `[${h}${h.toUpperCase()}]` : h)).join('')}`).join('');
  const json = char === '"' || char === '\\' ? `\\\\*${escapeRegExp(char)}` : JSON.stringify(char).length > 3 ? escapeRegExp(JSON.stringify(char).slice(1, -1)) : undefined;
  return `(?:${[escapeRegExp(char), percent, json].filter(Boolean).join('|')})`;
}

function secretPattern(secret: string): string {
  const body = [...secret].map(characterPattern).join('');
  return isShort(secret) ? `(?<![A-Za-z0-9])${body}(?![A-Za-z0-9])` : body;
}

export function registerSecret(value: string | undefined): void {
  if (!value || secrets.has(value)) return;
  secrets.set(value, secretPattern(value));
  // Longest first, so a secret that contains another is masked whole.
  longestFirst = [...secrets.keys()].sort((a, b) => b.length - a.length);
  combined = undefined;
}

/** Masks the literal spelling of one secret; a short one only where it stands as a whole token. */
function maskLiteral(text: string, secret: string): string {
  if (!isShort(secret)) return text.split(secret).join(MASK);
  let out = '';
  let from = 0;
  for (let at = text.indexOf(secret); at !== -1; at = text.indexOf(secret, at + 1)) {
    if (at < from || isAlphanumeric(text[at - 1]) || isAlphanumeric(text[at + secret.length])) continue;
    out += text.slice(from, at) + MASK;
    from = at + secret.length;
  }
  return out + text.slice(from);
}

export function redact(text: string): string {
  if (secrets.size === 0) return text;
  if (!mayBeEscaped(text)) return longestFirst.reduce(maskLiteral, text);
  combined ??= new RegExp(longestFirst.map(secret => secrets.get(secret)).join('|'), 'g');
  return text.replace(combined, MASK);
}
