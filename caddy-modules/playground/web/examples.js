// Example programs for each language GET /v1/languages lists: one that
// reads standard input and its arguments, one that prints as it goes (to
// watch the output stream in). A language the service adds later gets an
// empty editor and no examples until it has some here.

const stdin = 'Ada\n';
const args = 'one "two words"';

// examples maps a language id to its examples, the first the default.
export const examples = {
  python3: [
    {
      name: 'Hello, input', stdin, args, code: `import sys

name = sys.stdin.readline().strip() or "world"
print(f"Hello, {name}!")
print("arguments:", sys.argv[1:])
`,
    },
    {
      name: 'Count slowly', code: `import time

for i in range(1, 6):
    print(f"tick {i}", flush=True)
    time.sleep(0.5)
print("done")
`,
    },
  ],
  javascript: [
    {
      name: 'Hello, input', stdin, args, code: `const input = require('fs').readFileSync(0, 'utf8');
const name = input.split('\\n')[0].trim() || 'world';
console.log(\`Hello, \${name}!\`);
console.log('arguments:', process.argv.slice(2));
`,
    },
    {
      name: 'Count slowly', code: `let i = 0;
const timer = setInterval(() => {
  i += 1;
  console.log(\`tick \${i}\`);
  if (i === 5) {
    clearInterval(timer);
    console.log('done');
  }
}, 500);
`,
    },
  ],
  typescript: [
    {
      name: 'Types', code: `interface Point {
  x: number;
  y: number;
}

const points: Point[] = [{ x: 3, y: 4 }, { x: 5, y: 12 }];
for (const p of points) {
  console.log(\`|(\${p.x}, \${p.y})| = \${Math.hypot(p.x, p.y)}\`);
}
`,
    },
    {
      name: 'Count slowly', code: `const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function main(): Promise<void> {
  for (let i = 1; i <= 5; i++) {
    console.log(\`tick \${i}\`);
    await sleep(500);
  }
  console.log('done');
}

main();
`,
    },
  ],
  c: [
    {
      name: 'Hello, input', stdin, args, code: `#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    char name[100] = "world";
    if (fgets(name, sizeof name, stdin)) {
        name[strcspn(name, "\\n")] = '\\0';
    }
    printf("Hello, %s!\\n", name);
    for (int i = 1; i < argc; i++) {
        printf("argument %d: %s\\n", i, argv[i]);
    }
    return 0;
}
`,
    },
    {
      name: 'Count slowly', code: `#include <stdio.h>
#include <unistd.h>

int main(void) {
    for (int i = 1; i <= 5; i++) {
        printf("tick %d\\n", i);
        fflush(stdout);
        usleep(500000);
    }
    puts("done");
    return 0;
}
`,
    },
  ],
  cpp: [
    {
      name: 'Hello, input', stdin, args, code: `#include <iostream>
#include <string>

int main(int argc, char **argv) {
    std::string name;
    if (!std::getline(std::cin, name) || name.empty()) name = "world";
    std::cout << "Hello, " << name << "!\\n";
    for (int i = 1; i < argc; i++) {
        std::cout << "argument " << i << ": " << argv[i] << "\\n";
    }
}
`,
    },
    {
      name: 'Count slowly', code: `#include <chrono>
#include <iostream>
#include <thread>

int main() {
    for (int i = 1; i <= 5; i++) {
        std::cout << "tick " << i << std::endl;
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    std::cout << "done\\n";
}
`,
    },
  ],
  go: [
    {
      name: 'Hello, input', stdin, args, code: `package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

func main() {
	line, _ := bufio.NewReader(os.Stdin).ReadString('\\n')
	name := strings.TrimSpace(line)
	if name == "" {
		name = "world"
	}
	fmt.Printf("Hello, %s!\\n", name)
	fmt.Println("arguments:", os.Args[1:])
}
`,
    },
    {
      name: 'Count slowly', code: `package main

import (
	"fmt"
	"time"
)

func main() {
	for i := 1; i <= 5; i++ {
		fmt.Println("tick", i)
		time.Sleep(500 * time.Millisecond)
	}
	fmt.Println("done")
}
`,
    },
  ],
  java: [
    {
      name: 'Hello, input', stdin, args, code: `import java.util.Arrays;
import java.util.Scanner;

public class Main {
    public static void main(String[] args) {
        Scanner in = new Scanner(System.in);
        String name = in.hasNextLine() ? in.nextLine().trim() : "";
        if (name.isEmpty()) name = "world";
        System.out.println("Hello, " + name + "!");
        System.out.println("arguments: " + Arrays.toString(args));
    }
}
`,
    },
    {
      name: 'Count slowly', code: `public class Main {
    public static void main(String[] args) throws InterruptedException {
        for (int i = 1; i <= 5; i++) {
            System.out.println("tick " + i);
            Thread.sleep(500);
        }
        System.out.println("done");
    }
}
`,
    },
  ],
  csharp: [
    {
      name: 'Hello, input', stdin, args, code: `using System;

class Program {
    static void Main(string[] args) {
        string name = (Console.ReadLine() ?? "").Trim();
        if (name == "") name = "world";
        Console.WriteLine($"Hello, {name}!");
        Console.WriteLine("arguments: " + string.Join(", ", args));
    }
}
`,
    },
    {
      name: 'Count slowly', code: `using System;
using System.Threading;

class Program {
    static void Main() {
        for (int i = 1; i <= 5; i++) {
            Console.WriteLine($"tick {i}");
            Thread.Sleep(500);
        }
        Console.WriteLine("done");
    }
}
`,
    },
  ],
  rust: [
    {
      name: 'Hello, input', stdin, args, code: `use std::io::BufRead;

fn main() {
    let mut name = String::new();
    std::io::stdin().lock().read_line(&mut name).unwrap();
    let name = match name.trim() {
        "" => "world",
        n => n,
    };
    println!("Hello, {}!", name);
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("arguments: {:?}", args);
}
`,
    },
    {
      name: 'Count slowly', code: `use std::{thread, time::Duration};

fn main() {
    for i in 1..=5 {
        println!("tick {}", i);
        thread::sleep(Duration::from_millis(500));
    }
    println!("done");
}
`,
    },
  ],
  ruby: [
    {
      name: 'Hello, input', stdin, args, code: `name = ($stdin.gets || "").strip
name = "world" if name.empty?
puts "Hello, #{name}!"
puts "arguments: #{ARGV.inspect}"
`,
    },
    {
      name: 'Count slowly', code: `$stdout.sync = true
(1..5).each do |i|
  puts "tick #{i}"
  sleep 0.5
end
puts "done"
`,
    },
  ],
  php: [
    {
      name: 'Hello, input', stdin, args, code: `<?php
$name = trim((string) fgets(STDIN));
if ($name === '') {
    $name = 'world';
}
echo "Hello, $name!\\n";
echo 'arguments: ', implode(', ', array_slice($argv, 1)), "\\n";
`,
    },
    {
      name: 'Count slowly', code: `<?php
for ($i = 1; $i <= 5; $i++) {
    echo "tick $i\\n";
    flush();
    usleep(500000);
}
echo "done\\n";
`,
    },
  ],
  bash: [
    {
      name: 'Hello, input', stdin, args, code: `read -r name
echo "Hello, \${name:-world}!"
for arg in "$@"; do
  echo "argument: $arg"
done
`,
    },
    {
      name: 'Count slowly', code: `for i in 1 2 3 4 5; do
  echo "tick $i"
  sleep 0.5
done
echo done
`,
    },
  ],
};

// examplesFor is the examples of a language id, none for one without.
export function examplesFor(id) {
  return examples[id] ?? [];
}
