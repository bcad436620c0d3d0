// Secrets the inventory names by reference: the variable on the operator's machine that holds
// one ({ env = "NAME" } in [backend_env], access_key_env in [storage]), read before connecting.

/**
 * A secret from the operator's environment, or the problem with it, naming the variable and never
 * a value. It goes into .env as KEY=value, where quotes, "$", "#", backslashes and spaces would
 * be read as syntax, so those are refused.
 */
export function operatorSecret(variable: string, at: string, env: NodeJS.ProcessEnv = process.env): { value: string } | { problem: string } {
  const value = env[variable];
  if (!value) return { problem: `${at}: the environment variable ${variable} is not set. Export it with the value, then run again.` };
  if (!/^[\x21-\x7e]+$/.test(value) || /["'`$#\\]/.test(value)) return { problem: `${at}: the value of ${variable} may hold only printable characters other than spaces, quotes, "$", "#" and "\\" (it is written to .env).` };
  return { value };
}

