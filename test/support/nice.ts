import { readdirSync, readFileSync } from 'node:fs';

/** The nice value of every thread of `pid` (field 19 of /proc/<pid>/task/<tid>/stat). */
export function threadNices(pid: number): number[] {
  return readdirSync(`/proc/${pid}/task`).flatMap((t) => {
    try {
      const st = readFileSync(`/proc/${pid}/task/${t}/stat`, 'latin1');
      return [Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[16])];
    } catch {
      return []; // the thread ended meanwhile
    }
  });
}
