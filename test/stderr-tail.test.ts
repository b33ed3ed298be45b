import { PassThrough, Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { keyLine, StderrTail } from '../src/supervisor/stderr-tail.js';

describe('stderr tail (abort reasons in the app\'s own words)', () => {
  it('passes everything through and keeps only the last lines, bounded', async () => {
    const app = new PassThrough();
    let passed = '';
    const sink = new Writable({ write: (c: Buffer, _e, cb) => ((passed += c.toString()), cb()) });
    const tail = new StderrTail(app, sink);
    for (let i = 0; i < 2000; i++) app.write(`line ${i} ${'x'.repeat(40)}\n`);
    app.end('\u001b[31mError: the end\u001b[0m\n');
    await tail.drained(1000);
    expect(passed.split('\n').filter(Boolean)).toHaveLength(2001); // nothing withheld from the real stderr
    const text = tail.text();
    expect(text.split('\n')).toHaveLength(20);
    expect(text.length).toBeLessThanOrEqual(4096);
    expect(text.endsWith('Error: the end')).toBe(true); // colours stripped
    expect(text).toContain('line 1999');
    expect(tail.keptBytes).toBeLessThan(4096 + 100); // ~100 KB written, one chunk over the tail at most
  });

  it('names the failing line: a Node uncaught exception, a Python traceback, a plain last line', () => {
    const node = ['file:///app/main.js:8', 'import { X } from "./y.js";', '         ^', "SyntaxError: The requested module './y.js' does not provide an export named 'X'", '    at ModuleJob._instantiate (node:internal/modules/esm/module_job:213:21)', '', 'Node.js v20.20.2'].join('\n');
    expect(keyLine(node)).toBe("SyntaxError: The requested module './y.js' does not provide an export named 'X'");
    const python = ['Traceback (most recent call last):', '  File "app.py", line 3, in <module>', '    open("/etc/app.conf")', "FileNotFoundError: [Errno 2] No such file or directory: '/etc/app.conf'"].join('\n');
    expect(keyLine(python)).toBe("FileNotFoundError: [Errno 2] No such file or directory: '/etc/app.conf'");
    expect(keyLine('starting\nv1: cannot read /etc/app.conf\n')).toBe('v1: cannot read /etc/app.conf');
    expect(keyLine('')).toBe('');
    expect(keyLine('segmentation fault in the codec\n\nNode.js v22.11.0\n')).toBe('segmentation fault in the codec');
  });
});
