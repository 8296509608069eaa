// ferry's version, as `ferry --version`, the agents' health answer and checkpoint archives state it. It is the
// version of package.json (a unit test holds the two together).
export const VERSION = '0.5.0';
