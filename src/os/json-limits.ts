/**
 * Bounds on JSON that comes from outside (admin request bodies, task params, state
 * files). V8's JSON.parse is iterative and takes any depth, but JSON.stringify with a
 * replacer, structured clone and most code that walks a value recurse: a 12 KB body
 * `[[[…6000 deep…]]]` overflows the stack there (issue #21, item 1). So depth is
 * checked on the text before parsing, and on values before they are kept.
 *
 * 32 is the control protocol's limit too (the wire codec refuses deeper msgpack).
 */
export const MAX_JSON_DEPTH = 32;

/** Task params (admin POST /v1/jobs, schedules): nesting and serialised size. */
export const MAX_PARAMS_DEPTH = 16;
export const MAX_PARAMS_BYTES = 16 * 1024;

/**
 * The deepest nesting of `[`/`{` in a JSON text (strings skipped), stopping early once
 * it passes `limit`. Linear, no recursion; on invalid JSON the answer is a bound that
 * JSON.parse will reject anyway.
 */
export function jsonTextDepth(text: string, limit = Number.POSITIVE_INFINITY): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c /* \ */) i++;
      else if (c === 0x22 /* " */) inString = false;
      continue;
    }
    if (c === 0x22) inString = true;
    else if (c === 0x5b /* [ */ || c === 0x7b /* { */) {
      if (++depth > max) {
        max = depth;
        if (max > limit) return max;
      }
    } else if (c === 0x5d /* ] */ || c === 0x7d /* } */) depth--;
  }
  return max;
}

/**
 * The nesting depth of a value (a scalar is 0, `{}` and `[]` are 1), walked without
 * recursion and stopping once it passes `limit`. Cycles count as too deep.
 */
export function valueDepth(value: unknown, limit = MAX_JSON_DEPTH): number {
  if (typeof value !== 'object' || value === null) return 0;
  let max = 0;
  const stack: [object, number][] = [[value, 1]];
  let visited = 0;
  while (stack.length > 0) {
    const [v, d] = stack.pop()!;
    if (d > max) {
      max = d;
      if (max > limit) return max;
    }
    // A cycle or an absurdly wide value: treat as over the limit rather than walk forever.
    if (++visited > 1_000_000) return limit + 1;
    for (const child of Object.values(v)) if (typeof child === 'object' && child !== null) stack.push([child, d + 1]);
  }
  return max;
}

/** JSON.stringify with bigints as decimal strings; undefined (never a throw) when it cannot be serialised. */
export function safeJson(v: unknown): string | undefined {
  try {
    return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? x.toString() : x));
  } catch {
    return undefined;
  }
}
