// A Go target for `ptss trace`: goroutines call hot() a known number of times while the
// runtime preempts them asynchronously (SIGURG) and moves them between threads. Prints on
// stderr what a tracer must count, in the targets' common format:
//   go_counter: expect pid=P calls=N     (calls of main.hot)
// usage: go_counter [GOROUTINES [CALLS]]
package main

import (
	"fmt"
	"os"
	"strconv"
	"sync"
)

var sink uint64

//go:noinline
func hot(x uint64) uint64 {
	return x*2654435761 + 1
}

// spin keeps a goroutine busy between calls, long enough for async preemption to land
// anywhere, including inside hot's entry.
//go:noinline
func spin(n int) uint64 {
	var s uint64
	for i := 0; i < n; i++ {
		s += uint64(i) ^ s
	}
	return s
}

func main() {
	goroutines, calls := 16, 25000
	if len(os.Args) > 1 {
		goroutines, _ = strconv.Atoi(os.Args[1])
	}
	if len(os.Args) > 2 {
		calls, _ = strconv.Atoi(os.Args[2])
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			var local uint64
			for i := 0; i < calls; i++ {
				local += hot(uint64(i + g))
				local += spin(i % 64)
			}
			mu.Lock()
			sink += local
			mu.Unlock()
		}(g)
	}
	wg.Wait()
	fmt.Printf("sum %d\n", sink)
	fmt.Fprintf(os.Stderr, "go_counter: expect pid=%d calls=%d\n", os.Getpid(), goroutines*calls)
}
