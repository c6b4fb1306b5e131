"""Per language of the shipped catalogue: a program that greets the line on its stdin ("hello, <line>")
and exits 0, one that exits with code 3 after writing to stderr, and for compiled languages one the
compiler refuses, with a fragment of the compiler's message.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Programs:
    greet: str  # prints "hello, " and the first line of stdin
    fail: str  # prints "oops" to stderr, exits 3
    broken: str | None = None  # does not compile (compiled languages)
    compiler_says: str | None = None  # in the compiler's message about `broken`


PROGRAMS = {
    "python": Programs(
        greet="print('hello,', input())",
        fail="import sys\nprint('oops', file=sys.stderr)\nsys.exit(3)",
    ),
    "javascript": Programs(
        greet="const line = require('fs').readFileSync(0, 'utf8').split('\\n')[0];\nconsole.log('hello, ' + line);",
        fail="console.error('oops'); process.exit(3);",
    ),
    "typescript": Programs(
        # No @types/node in Debian 12: the program declares what it uses of node.
        greet="declare const require: any;\nconst line: string = require('fs').readFileSync(0, 'utf8').split('\\n')[0];\n"
              "console.log('hello, ' + line);",
        fail="declare const process: any;\nconsole.error('oops');\nprocess.exit(3);",
        broken="const n: number = 'not a number';\n",
        compiler_says="error TS2322",
    ),
    "bash": Programs(
        greet='read -r line; echo "hello, $line"',
        fail="echo oops >&2; exit 3",
    ),
    "c": Programs(
        greet='#include <stdio.h>\nint main(void) { char line[256]; if (!fgets(line, sizeof line, stdin)) return 1;\n'
              '  printf("hello, %s", line); return 0; }\n',
        fail='#include <stdio.h>\nint main(void) { fputs("oops\\n", stderr); return 3; }\n',
        broken="int main(void) { return undeclared; }\n",
        compiler_says="undeclared (first use in this function)",
    ),
    "cpp": Programs(
        greet='#include <iostream>\n#include <string>\nint main() { std::string line; std::getline(std::cin, line);\n'
              '  std::cout << "hello, " << line << "\\n"; }\n',
        fail='#include <iostream>\nint main() { std::cerr << "oops\\n"; return 3; }\n',
        broken="int main() { std::vector<int> v; }\n",
        compiler_says="error:",
    ),
    "fortran": Programs(
        greet="program greet\n  character(len=256) :: line\n  read (*, '(A)') line\n"
              "  write (*, '(A)') 'hello, ' // trim(line)\nend program greet\n",
        fail="program fail\n  write (0, '(A)') 'oops'\n  error stop 3\nend program fail\n",
        broken="program broken\n  integer :: i\n  i = 'text'\nend program broken\n",
        compiler_says="Error:",
    ),
    "java": Programs(
        greet="import java.util.Scanner;\npublic class Main {\n  public static void main(String[] args) {\n"
              "    System.out.println(\"hello, \" + new Scanner(System.in).nextLine());\n  }\n}\n",
        fail="public class Main {\n  public static void main(String[] args) {\n"
             "    System.err.println(\"oops\");\n    System.exit(3);\n  }\n}\n",
        broken="public class Main { public static void main(String[] args) { int x = \"text\"; } }\n",
        compiler_says="incompatible types",
    ),
    "go": Programs(
        greet='package main\n\nimport (\n\t"bufio"\n\t"fmt"\n\t"os"\n)\n\nfunc main() {\n'
              '\tline, _ := bufio.NewReader(os.Stdin).ReadString(\'\\n\')\n\tfmt.Print("hello, ", line)\n}\n',
        fail='package main\n\nimport (\n\t"fmt"\n\t"os"\n)\n\nfunc main() {\n\tfmt.Fprintln(os.Stderr, "oops")\n\tos.Exit(3)\n}\n',
        broken="package main\n\nfunc main() {\n\tvar x int = \"text\"\n}\n",
        compiler_says="cannot use",
    ),
    "rust": Programs(
        greet="use std::io::BufRead;\nfn main() {\n    let mut line = String::new();\n"
              "    std::io::stdin().lock().read_line(&mut line).unwrap();\n    print!(\"hello, {}\", line);\n}\n",
        fail="fn main() {\n    eprintln!(\"oops\");\n    std::process::exit(3);\n}\n",
        broken="fn main() {\n    let x: i32 = \"text\";\n}\n",
        compiler_says="mismatched types",
    ),
    "csharp": Programs(
        greet="using System;\nclass Program {\n  static void Main() {\n"
              "    Console.WriteLine(\"hello, \" + Console.ReadLine());\n  }\n}\n",
        fail="using System;\nclass Program {\n  static int Main() {\n    Console.Error.WriteLine(\"oops\");\n    return 3;\n  }\n}\n",
        broken="class Program { static void Main() { int x = \"text\"; } }\n",
        compiler_says="error CS0029",
    ),
    "ruby": Programs(
        greet='puts "hello, #{gets}"',
        fail="warn 'oops'\nexit 3",
    ),
    "php": Programs(
        greet='<?php echo "hello, " . fgets(STDIN);',
        fail='<?php fwrite(STDERR, "oops\\n"); exit(3);',
    ),
    "perl": Programs(
        greet='my $line = <STDIN>; print "hello, $line";',
        fail='print STDERR "oops\\n"; exit 3;',
    ),
    "lua": Programs(
        greet='print("hello, " .. io.read("l"))',
        fail='io.stderr:write("oops\\n"); os.exit(3)',
    ),
}
