// Reads .env files with Node's `dotenv` (`dotenv.parse`), as a Node application would.
//
// Paths arrive one per line on standard input; for each, one JSON line goes to standard
// output: the file's variables. Used by the dotenv editor's parser-agreement test
// (src/target/dotenv_parsers.rs). `tests/run.sh` installs the pinned `dotenv` here.
const fs = require('fs');
const dotenv = require('dotenv');

const input = fs.readFileSync(0, 'utf8');
const out = [];
for (const path of input.split('\n')) {
  if (path === '') continue;
  out.push(JSON.stringify(dotenv.parse(fs.readFileSync(path))));
}
process.stdout.write(out.join('\n') + (out.length ? '\n' : ''));
