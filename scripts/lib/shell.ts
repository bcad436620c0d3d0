// Remote commands are POSIX sh scripts. Values are quoted here, on our side, so that a path or
// a password can never be read by the remote shell as syntax. (zx's own quoting is for the
// local shell and is not used for remote commands.)

/** Quotes one value as a single POSIX sh word. */
export function quote(value: string | number): string {
  const text = String(value);
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(text)) return text;
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

/** Tagged template: every interpolated value is quoted; arrays become several quoted words. */
export function sh(strings: TemplateStringsArray, ...values: Array<string | number | Array<string | number>>): string {
  let out = strings[0] ?? '';
  values.forEach((value, i) => {
    out += Array.isArray(value) ? value.map(quote).join(' ') : quote(value);
    out += strings[i + 1] ?? '';
  });
  return out;
}
