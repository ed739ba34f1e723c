// A stand-in for the host's `sonde:collector/host` interface: records log
// lines, answers config from a table the tests fill.
export const lines = [];
export const configTable = new Map();
export function log(level, message) {
  lines.push([level, message]);
}
export function config(key) {
  return configTable.get(key);
}
