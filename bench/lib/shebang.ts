/** The bin's shebang flags: src/os/shebang.ts (also used by `baton unit`). */
export { shebangNodeArgs } from '../../src/os/shebang.js';
