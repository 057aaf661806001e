/*
 * ptss's free list, growth protocol, callers' caches and derived statistics, as
 * src/freelist.h and src/proc.c implement them.
 *
 * NT threads of one traced process each claim an entry, may release it and claim again,
 * up to ROUNDS claims each, in any interleaving; thread 0 may fork once; the process may
 * exec (or exit) at any moment the library's contract allows. Thread 1 works through a
 * cache of its own (ptss_cache_claim / ptss_cache_release, PTSS_CACHE_CAP 1 here): it
 * parks what it releases, and claims either from its cache or from the shared list, so
 * that its cache is sometimes full at a release and spills to the shared list. Spin explores every
 * interleaving of the steps below, under sequential consistency (the C code's
 * acquire/release orderings are argued in src/freelist.h, not checked here).
 *
 * Steps. Every access to shared state that another thread can observe or race with is a
 * step of its own: each load of head, each load or store of next[] that a stale popper
 * may read, each CAS on head. An access that commutes with everything other threads can
 * do at that moment is merged into the neighbouring step (Lipton's reduction: it hides
 * no interleaving that could change an outcome):
 *   - the read of torn_down at a call's entry, merged with the call's first head load:
 *     torn_down changes only in exec_exit, which never runs while a call is in flight;
 *   - the owner's check of next[i] == CLAIMED in release, merged likewise: only the
 *     owner writes next[i] while it owns i;
 *   - lock acquisition (a right mover) merged with the following head load, and the
 *     unlock (a left mover) with the preceding step;
 *   - growth: pages++, next[i] = CLAIMED for the kept entry, the high-water note and the
 *     links of the rest of the page are one step: no other thread can see a new page's
 *     next[] before the push publishes it;
 *   - a push's load of the old top's word (its depth) and its stores into the chain it
 *     pushes are one step: the chain is the pusher's, and the only other thread that can
 *     read a chain word is a stale popper whose CAS fails whatever it read (left movers);
 *   - a pop's high-water note is merged into its successful CAS, reading pages there: the
 *     C code reads pages after the CAS, and pages only grows, so the CAS is the point where
 *     the figure is smallest (the most adversarial choice for "never under-reports");
 *   - a cache claim, and a park into a cache, touch only the caller's cache: one step;
 *   - ptss_fork's atomic read of base (it takes no lock) is one step, merged with the
 *     (ghost) unmap in the child.
 * Ghost bookkeeping (owner[], busy, the checks) and the printf narration (silent during
 * verification, printed by `spin -t`) ride along inside the steps.
 *
 * The variants, chosen with -D at `spin -a` time (verify/spin/run runs them all, and the
 * default again with -DEPP=3 -DNT=4 -DROUNDS=1: chains of two entries, two growths):
 *
 *   (default)       a 4-bit tag: more than the at most NT*ROUNDS*2 = 12 successful head
 *                   CASes a run can make, so it never wraps (asserted)  -> must verify.
 *   -DTAGBITS=2 -DWRAP  a tag that wraps every 4 head CASes: the ABA case comes back when
 *                   the others make a multiple of 4 CASes while one popper sleeps
 *                                                                        -> must fail.
 *   -DPLAIN         no tag at all: the head is a plain index, like the seed's Treiber
 *                   stack (tests/treiber.h)                              -> must fail (ABA).
 *   -DNO_DOUBLE_CHECK  claim_locked grows without popping again          -> must fail (P4).
 *   -DEXEC_RACE     exec_exit may run while other calls are in flight, which
 *                   docs/library.md forbids             -> must fail (next[] after munmap).
 *   -DHW_AFTER_PUSH the grower notes the high water after its push, from the list's depth
 *                   then, instead of at the double check: a release between the two hides
 *                   the moment the kept entry made one more claimed -> must fail (P8).
 *   -DNO_CACHE      thread 1 uses the shared list like the others (the protocol before
 *                   caches): must verify.
 *
 * What wrap needs in the real code: head is tag << 32 | top with a 32-bit tag, so a
 * popper's stale CAS succeeds only if, between its load of head and its CAS, a multiple
 * of 2^32 successful CASes on head happened and the last left the same top -- one thread
 * stalled between two adjacent instructions while the others make 4 294 967 296 list
 * operations. In a tracer each claim or release rides on a thread's creation or exit and
 * a ptrace stop (microseconds at least), so that is many hours; the tightest in-process
 * loop (bench/claim_release: about 9 ns per claim+release, two CASes) needs about 20 s,
 * all of it spent while the stalled thread does not execute its next instruction. The
 * TAGBITS=2 run (and TAGBITS=3: 8 CASes by two threads) shows what would happen then;
 * the default run shows that as long as the tag does not wrap, nothing breaks.
 *
 * Properties (assertions), checked in the same indivisible step as every CAS on head,
 * every growth, exec_exit, and at the end -- every step where they can change:
 *
 *   P1  no entry is owned by two threads at once                    (take())
 *   P2  no entry is both owned and on the list                      (check_inv())
 *   P3  none lost, none twice: |list| + |owned| == mapped entries, at every change and
 *       at the end; the list holds only mapped entries and has no cycle (check_inv())
 *   P4  growth only when the list is truly empty: when the double check under the lock
 *       reads an empty head, every mapped entry is owned by a thread (nothing free,
 *       nothing lost). Hence NT claimers map at most ceil(NT / EPP) pages
 *       (pages * EPP < NT + EPP at every growth) and the reservation never fills. Growth
 *       only with the lock held.
 *   P5  after exec_exit claims fail and a late release changes nothing: at the end head,
 *       tag, pages and next[] are as tear_down left them, and next[] (munmapped) is never
 *       touched again (NEXT_OK at every access). In the default run the tag never wraps.
 *   P6  an owner's release always passes the C code's double-release check
 *       (next[i] == PTSS_CLAIMED); after ptss_fork the child has no scratch pages; fork
 *       writes nothing on the parent's side (by construction: it only reads).
 *   P7  no deadlock: pan's invalid-end-state check (every run can finish, lock free).
 *   P8  the high water never under-reports: at every quiescent point (exec_exit, the end)
 *       hw >= the most entries threads ever owned at once (ghost maxowned).
 *   P9  the derived statistics are exact at quiescence: the depth recorded at the top is
 *       the list's length (checked with P3 at every change), and entries - |list| -
 *       parked == the entries threads own (checked with P8).
 * P1-P3 count an entry parked in a cache as its cache's (owner PARKED + t): every entry is
 * in exactly one place -- the list, a cache, or a thread's hands (or a grower's new page).
 */

#ifndef NT
#define NT 3            /* threads */
#endif
#ifndef ROUNDS
#define ROUNDS 2        /* claims per thread */
#endif
#ifndef EPP
#define EPP 2           /* entries per page */
#endif
#ifndef MAXPAGES
#define MAXPAGES 2      /* pages in the reservation */
#endif
#define N (EPP * MAXPAGES)

#define NIL 255         /* PTSS_NIL */
#define CLAIMED 254     /* PTSS_CLAIMED */
#define NOBODY 255
#define EXECUTOR 254    /* the lock holder while exec_exit runs (EXEC_RACE) */
#define PARKED 128      /* owner[i] == PARKED + t: parked in thread t's cache */

#ifndef NO_CACHE
#define CACHED(t) (t == 1)      /* thread 1 works through a cache */
#define NCACHED 1
#else
#define CACHED(t) false
#define NCACHED 0
#endif

#ifdef PLAIN
#define TAGBITS 0       /* a plain index: the "tag" is always 0 */
#define WRAP
#endif
#ifndef TAGBITS
#define TAGBITS 4       /* wide enough never to wrap here: asserted unless -DWRAP */
#endif
#define TAGMOD (1 << TAGBITS)

/* The shared state of one ptss_proc. */
byte htag = 0;          /* head >> 32, modulo TAGMOD                  list.head      */
byte htop = NIL;        /* (uint32_t)head                             list.head      */
byte next[N];           /* list.next[] (its low 32 bits): zero-filled at first       */
byte depth[N];          /* list.next[] >> 32: the list's depth from i down            */
byte pages = 0;         /* p->pages; base != 0 iff pages > 0 (grow failures not modeled) */
bool next_mapped = 1;   /* list.next is mapped: tear_down munmaps it                 */
bool torn = 0;          /* p->torn_down                                              */
byte lock = NOBODY;     /* p->lock: its holder                                       */
byte hw = 0;            /* p->claimed_high_water                                     */
byte cache[NT] = NIL;   /* thread t's cache: its parked entry, NIL when empty (n = 0) */

/* Ghost state: what the properties speak of; the C code has no such fields. */
byte owner[N] = NOBODY; /* who owns entry i                                          */
byte busy = 0;          /* calls in flight (exec_exit's contract)                    */
bool forked = 0;        /* thread 0 forked                                           */
byte child_pages = 0;   /* scratch pages mapped in the fork child                    */
byte done = 0;          /* threads finished                                          */
byte nowned = 0;        /* entries threads own (claimed: not parked, not a grower's)  */
byte maxowned = 0;      /* the most they ever owned at once: hw must not be below    */

/* Scratch for the checks, used only inside indivisible steps and always 0 between them. */
byte wj, wn, wk;

/* ---- The properties ---- */

/* P2, P3, P9: walk the list, checking each depth, then count the owned entries. */
inline check_inv()
{
	wn = 0;
	wj = htop;
	do
	:: wj == NIL -> break
	:: wj != NIL && (wj >= pages * EPP || wn >= pages * EPP) ->
		assert(wj < pages * EPP);       /* a mapped entry (so not CLAIMED) */
		assert(wn < pages * EPP);       /* no cycle */
		break                           /* (a trail replay goes on past assertions) */
	:: else ->
		assert(owner[wj] == NOBODY);    /* P2 */
		assert(depth[wj] + wn == depth[htop]);  /* P9: the depths count down */
		wn++;
		wj = next[wj]
	od;
	assert(htop == NIL || wn == depth[htop]);       /* P9: ... to 1 at the bottom */
	for (wk : 0 .. N - 1) {
		if
		:: owner[wk] != NOBODY -> assert(wk < pages * EPP); wn++
		:: else
		fi
	}
	assert(wn == pages * EPP);              /* P3 */
	wj = 0; wn = 0; wk = 0
}

/* P4: the double check read an empty head: every mapped entry must be owned. */
inline check_truly_empty()
{
	wn = 0;
	for (wk : 0 .. N - 1) {
		if
		:: owner[wk] != NOBODY -> wn++
		:: else
		fi
	}
	assert(wn == pages * EPP);
	wn = 0; wk = 0
}

inline take(me, i)                      /* P1: i becomes me's */
{
	assert(owner[i] == NOBODY);
	owner[i] = me
}

inline owned_up()                       /* a thread owns one more entry */
{
	nowned++;
	if
	:: nowned > maxowned -> maxowned = nowned
	:: else
	fi
}

inline note_hw(v)                       /* note_high_water(): raise hw to v */
{
	if
	:: v > hw -> hw = v
	:: else
	fi
}

/* P8, P9 at a quiescent point (no call in flight). */
inline check_stats()
{
	assert(hw >= maxowned);                                 /* P8 */
	wn = 0;
	for (wk : 0 .. NT - 1) {
		if
		:: cache[wk] != NIL -> wn++
		:: else
		fi
	}
	if
	:: htop != NIL -> wn = wn + depth[htop]
	:: else
	fi;
	assert(pages * EPP - wn == nowned);                     /* P9 */
	wn = 0; wk = 0
}

#ifndef WRAP
#define NO_WRAP(t) assert(t + 1 < TAGMOD)       /* P5: the tag never wraps */
#else
#define NO_WRAP(t) skip                         /* -DWRAP: let it wrap */
#endif
#define NEXT_OK assert(next_mapped)     /* P5: next[] is touched only while mapped */

/* The end of a call (ghost), and ptss_unlock() where the lock is held. */
inline call_returns(me)
{
	if
	:: lock == me -> lock = NOBODY
	:: else
	fi;
	busy--
}

/* ---- src/freelist.h ---- */

/*
 * ptss_freelist_pop() and pop_shared(), from the point where head is loaded into
 * (ht, hp) (the load is merged into the caller's entry step): the popped index in `ret`,
 * NIL when empty. `dbl`: this is the double check, under the lock.
 *
 *   head = load_acquire(&fl->head)                         caller's step
 *   for (;;) {
 *     top = head_top(head); if (top == NIL) return NIL
 *     link = load_relaxed(&fl->next[top])                  below and depth; may be stale:
 *                                                          then the CAS fails
 *     if (cas_weak_acq_rel(&fl->head, &head, (tag+1) << 32 | below)) {
 *       store_relaxed(&fl->next[top], CLAIMED)
 *       note_high_water(p, entries - depth + 1)            pop_shared(); entries loaded here
 *       return top
 *     }                                                    else head = its current value
 *   }
 *
 * The CLAIMED store is a step of its own: until it lands, a stale popper can still read
 * next[top] == below. A failed CAS reloads head in the same step; that reload is the
 * double check's last look at head too, hence the P4 check there. Spurious failures of
 * the weak CAS are not modeled: a retry with the same head is what a popper that stalled
 * before its first load does anyway.
 */
inline pop(me, ret, dbl)
{
	do
	:: hp == NIL -> ret = NIL; ht = 0; break
	:: else ->
		d_step {
			printf("T%d   pop: below = next[%d] = %d, depth %d\n", me, hp, next[hp], depth[hp]);
			NEXT_OK; below = next[hp]; dp = depth[hp]
		};
		if
		:: d_step {
			htag == ht && htop == hp ->
			printf("T%d   pop: CAS head (%d,%d) -> (%d,%d) succeeds: T%d owns entry %d\n",
			       me, ht, hp, (ht + 1) % TAGMOD, below, me, hp);
			NO_WRAP(ht);
			htag = (ht + 1) % TAGMOD; htop = below;
			take(me, hp);
			owned_up();
			check_inv();
			note_hw(pages * EPP - dp + 1)
		   };
		   d_step {
			printf("T%d   pop: next[%d] = CLAIMED\n", me, hp);
			NEXT_OK; next[hp] = CLAIMED; depth[hp] = 0; ret = hp;
			ht = 0; hp = 0; below = 0; dp = 0;
			call_returns(me)
		   };
		   break
		:: d_step {
			!(htag == ht && htop == hp) ->
			printf("T%d   pop: CAS head (%d,%d) fails: head is (%d,%d)\n",
			       me, ht, hp, htag, htop);
			ht = htag; hp = htop; below = 0; dp = 0;
			if
			:: dbl && hp == NIL -> check_truly_empty()
			:: else
			fi
		   }
		fi
	od
}

/*
 * ptss_freelist_push_chain(), from the point where head is loaded into (ht, hp): the
 * caller owns first..last (top first), already linked through next[].
 *
 *   head = load_acquire(&fl->head)                         caller's step
 *   for (;;) {
 *     d = load_relaxed(&fl->next[top]) >> 32               the old top's depth; may be
 *                                                          stale: then the CAS fails
 *     next[last] = (d + 1) << 32 | top, ..., next[first] = (d + n) << 32 | first + 1
 *     if (cas_weak_acq_rel(&fl->head, &head, (tag+1) << 32 | first)) break
 *   }                                                      else head = its current value
 *
 * The chains ptss pushes are runs of consecutive indices here (a release or a spill: one
 * entry; growth: the rest of a new page), which the ghost hand-over relies on. A
 * successful push ends the call. `mode`: 0, a grower's new page (the grower's, not
 * claimed); 1, a release (me's, claimed: forgotten); 2, a spill of me's parked entry,
 * after which ptss_cache_release parks `mine` (merged: the cache is me's alone).
 */
inline push_chain(me, first, last, mode)
{
	do
	:: atomic {
		if
		:: hp == NIL -> dt = 0
		:: else -> NEXT_OK; dt = depth[hp]
		fi;
		printf("T%d   push: depth of top %d = %d; next[%d] = %d\n", me, hp, dt, last, hp);
		NEXT_OK;
		next[last] = hp;
		for (wk : first .. last) {
			depth[wk] = dt + 1 + last - wk
		}
		wk = 0
	   };
	   if
	   :: d_step {
		htag == ht && htop == hp ->
		printf("T%d   push: CAS head (%d,%d) -> (%d,%d) succeeds: entries %d..%d free\n",
		       me, ht, hp, (ht + 1) % TAGMOD, first, first, last);
		NO_WRAP(ht);
		htag = (ht + 1) % TAGMOD; htop = first;
		for (wk : first .. last) {
			assert(owner[wk] == me && mode != 2 || owner[wk] == PARKED + me && mode == 2);
			owner[wk] = NOBODY
		}
		check_inv();
#ifdef HW_AFTER_PUSH
		if
		:: mode == 0 -> note_hw(pages * EPP - depth[first])
		:: else
		fi;
#endif
		ht = 0; hp = 0; dt = 0;
		if
		:: mode == 1 -> mine = NIL; nowned--
		:: mode == 2 ->                 /* park mine where the spilled entry was */
			printf("T%d   park %d in its cache\n", me, mine);
			cache[me] = mine; owner[mine] = PARKED + me; mine = NIL; nowned--
		:: else
		fi;
		first = 0; last = 0;
		call_returns(me)
	      };
	      break
	   :: d_step {
		!(htag == ht && htop == hp) ->
		printf("T%d   push: CAS head (%d,%d) fails: head is (%d,%d)\n",
		       me, ht, hp, htag, htop);
		ht = htag; hp = htop
	      }
	   fi
	od
}

/* ---- src/proc.c ---- */

/*
 * ptss_claim():
 *
 *   if (torn_down) return ESRCH
 *   i = ptss_freelist_pop(&p->list); if (i != NIL) return i
 *   ptss_lock(p); e = ptss_claim_locked(p); ptss_unlock(p)
 *
 * ptss_claim_locked():
 *
 *   if (torn_down) return ESRCH                            false but with EXEC_RACE: the
 *                                                          caller checked it, and exec_exit
 *                                                          waits for calls in flight
 *   i = ptss_freelist_pop(&p->list)                        the double check
 *   if (i == NIL) {
 *     grow_locked(p, 1, &i)                                pages++ (store_release); i: first
 *                                                          entry of the new page
 *     store_relaxed(&next[i], CLAIMED)                     keep it
 *     note_high_water(p, i + 1)                            all i older entries were off the
 *                                                          list at the double check, + this
 *     push_range(p, i + 1, EPP - 1)                        link the rest; push_chain: one CAS
 *   }
 */
inline claim_locked(me)
{
	if
	:: esrch -> d_step { esrch = 0; mine = NIL; call_returns(me) }  /* ESRCH */
	:: else ->
		pop(me, mine, 1);                       /* the double check */
		if
		:: d_step {
			mine == NIL && pages == MAXPAGES ->
			assert(0);                      /* P4: ENOSPC is unreachable */
			call_returns(me)
		   }
		:: d_step {
			mine == NIL && pages < MAXPAGES ->
			/* grow_locked(): the new page is the grower's until pushed */
			printf("T%d   grow: page %d mapped, T%d keeps entry %d\n",
			       me, pages, me, pages * EPP);
			assert(lock == me);                     /* P4 */
			g = pages * EPP;
			pages++;
			/* P4: a thread holds at most one entry, and a cache one more */
			assert(pages * EPP < NT + NCACHED + EPP);
			for (wk : g .. g + EPP - 1) {
				take(me, wk)
			}
			owned_up();                             /* the kept entry is claimed */
			check_inv();
			NEXT_OK;
			next[g] = CLAIMED; mine = g;            /* keep the first entry */
#ifndef HW_AFTER_PUSH
			note_hw(g + 1);
#endif
			/* push_range(p, g + 1, g + EPP - 1): link the rest */
			cf = g + 1; cl = g + EPP - 1;
			for (wk : cf .. cl - 1) {
				next[wk] = wk + 1
			}
			wk = 0; g = 0
		   };
		   d_step {                                /* push_chain's head load */
			ht = htag; hp = htop;
			printf("T%d   push %d..%d: head = (%d,%d)\n", me, cf, cl, ht, hp)
		   };
		   push_chain(me, cf, cl, 0)
		:: else
		fi
	fi
}

inline claim(me)
{
	if
	:: d_step {
		torn -> mine = NIL;                     /* ESRCH; P5: claims fail */
		printf("T%d ptss_claim: ESRCH (torn down)\n", me)
	   }
	:: d_step {
		!torn -> busy++; ht = htag; hp = htop;
		printf("T%d ptss_claim: head = (%d,%d)\n", me, ht, hp)
	   };
		pop(me, mine, 0);
		if
		:: mine == NIL ->
			/* ptss_lock(), then claim_locked()'s torn_down check and the double
			 * check's head load */
			atomic {
				lock == NOBODY -> lock = me;
				d_step {
					if
					:: torn -> esrch = 1    /* only with EXEC_RACE */
					:: else ->
						ht = htag; hp = htop;
						printf("T%d   lock; claim_locked: head = (%d,%d)\n", me, ht, hp);
#ifndef NO_DOUBLE_CHECK
						if
						:: hp == NIL -> check_truly_empty()
						:: else
						fi
#else
						/* growth is decided here, without looking */
						check_truly_empty();
						ht = 0; hp = NIL
#endif
					fi
				}
			};
			claim_locked(me)
		:: else
		fi
	fi
}

/*
 * ptss_release():
 *
 *   if (torn_down) { ignored_releases++; return 0 }        e is not touched
 *   i = index_of(p, e)
 *   if (load_relaxed(&next[i]) != CLAIMED) return -EINVAL  the double-release check
 *   ptss_freelist_push(&p->list, i)
 */
inline release(me)
{
	if
	:: d_step {
		torn ->                                 /* ignored, nothing touched: P5 */
		printf("T%d ptss_release(%d): ignored (torn down)\n", me, mine);
		mine = NIL
	   }
	:: d_step {
		!torn ->
		printf("T%d ptss_release(%d): head = (%d,%d)\n", me, mine, htag, htop);
		busy++;
		NEXT_OK; assert(next[mine] == CLAIMED);         /* P6 */
		cf = mine; cl = mine;
		ht = htag; hp = htop
	   };
	   push_chain(me, cf, cl, 1)
	fi
}

/*
 * ptss_cache_claim(c) when the cache holds an entry: n--, return idx[n]. Touches only c.
 * (When it is empty, ptss_cache_claim is ptss_claim: claim(me).)
 */
inline cache_claim(me)
{
	d_step {
		mine == NIL && claims < ROUNDS && cache[me] != NIL ->
		claims++;
		printf("T%d ptss_cache_claim: %d from its cache\n", me, cache[me]);
		assert(owner[cache[me]] == PARKED + me);
		mine = cache[me]; owner[mine] = me; cache[me] = NIL;
		owned_up()
	}
}

/*
 * ptss_cache_release(c, e):
 *
 *   if (torn_down) { ignored_releases++; return 0 }
 *   if (load_relaxed(&next[i]) != CLAIMED || i in idx[0..n)) return -EINVAL
 *   if (n == CAP) cache_spill(c, CAP / 2)                  push_chain of the oldest: one CAS
 *   idx[n++] = i                                           park: touches only c
 */
inline cache_release(me)
{
	if
	:: d_step {
		torn ->
		printf("T%d ptss_cache_release(%d): ignored (torn down)\n", me, mine);
		mine = NIL
	   }
	:: d_step {
		!torn && cache[me] == NIL ->
		printf("T%d ptss_cache_release(%d): parked\n", me, mine);
		NEXT_OK; assert(next[mine] == CLAIMED);         /* P6 */
		cache[me] = mine; owner[mine] = PARKED + me; mine = NIL; nowned--
	   }
	:: d_step {
		!torn && cache[me] != NIL ->                    /* full: spill, then park */
		printf("T%d ptss_cache_release(%d): cache full, spill %d: head = (%d,%d)\n",
		       me, mine, cache[me], htag, htop);
		busy++;
		NEXT_OK; assert(next[mine] == CLAIMED && cache[me] != mine);    /* P6 */
		cf = cache[me]; cl = cache[me];
		ht = htag; hp = htop
	   };
	   push_chain(me, cf, cl, 2)
	fi
}

/*
 * The target forks, then the tracer calls ptss_fork(parent, child):
 *
 *   base = load_acquire(&parent->base)                     no lock: a fork child may hold
 *                                                          a copy of it, locked for good
 *   if (base) _ptss_space_unmap(child, base, reserve_size)  child side only: one unmap
 *
 * Nothing of the parent is written. Both happen in one life of the process (the fork
 * before its exec_exit), which busy expresses. It runs whoever holds the lock.
 */
inline fork(me)
{
	d_step { busy++; child_pages = pages };         /* the child copies the mappings */
	d_step {                                        /* read base, no lock */
		if
		:: pages > 0 -> child_pages = 0         /* unmap the whole reservation */
		:: else
		fi;
		assert(child_pages == 0);               /* P6 */
		busy--
	}
}

/* ---- The processes ---- */

/* A thread of the traced process, as the tracer sees it: claim, use, release, again. */
active [NT] proctype thread()
{
	byte mine = NIL;        /* the entry this thread owns */
	byte claims = 0;
	byte ht, hp, below, dp; /* a local copy of head; next[top] as read: below, depth */
	byte dt;                /* a push: the old top's depth as read */
	byte g, cf, cl;         /* growth: the new page's first entry; the chain to push */
	bool esrch;             /* claim_locked found the process torn down */

	do
	:: mine == NIL && claims < ROUNDS -> claims++; claim(_pid)
	:: cache_claim(_pid)    /* only when its cache holds an entry */
	:: mine != NIL && !CACHED(_pid) -> release(_pid)
	:: mine != NIL && CACHED(_pid) -> cache_release(_pid)
	:: atomic { _pid == 0 && !forked -> forked = 1 }; fork(_pid)
	:: claims == ROUNDS -> break    /* done: it may still hold its last entry */
	od;
	done++
}

/*
 * ptss_exec_exit(): the process execs or exits. docs/library.md: exec_exit and proc_free
 * "must not run concurrently with other calls on the same process", so it runs when no
 * call is in flight (busy == 0), in one indivisible step. tear_down(): drop_reservation
 * (pages = 0, base = 0), munmap next[], head = NIL (tag 0), every cache emptied,
 * torn_down = true. The entries vanish with the image (their ghost owners are cleared);
 * threads that hold one will release it late.
 */
active proctype exec_exit()
{
#ifndef EXEC_RACE
end:	atomic {
		busy == 0 && lock == NOBODY && done < NT ->
		printf("ptss_exec_exit: torn down\n");
		check_inv();                    /* P3, at a quiescent point */
		check_stats();                  /* P8, P9 */
		pages = 0;
		next_mapped = 0;
		for (wk : 0 .. N - 1) {
			next[wk] = 0;
			depth[wk] = 0;
			owner[wk] = NOBODY
		}
		for (wk : 0 .. NT - 1) {
			cache[wk] = NIL
		}
		nowned = 0;
		wk = 0;
		htag = 0; htop = NIL;
		torn = 1
	}
#else
	/* The forbidden race: the same steps, with calls in flight. */
end:	atomic { lock == NOBODY && done < NT -> lock = EXECUTOR };
	d_step { pages = 0; printf("ptss_exec_exit: lock; pages = 0\n") };
	d_step {
		printf("ptss_exec_exit: munmap next[]\n");
		next_mapped = 0;
		for (wk : 0 .. N - 1) {
			next[wk] = 0;
			depth[wk] = 0;
			owner[wk] = NOBODY
		}
		for (wk : 0 .. NT - 1) {
			cache[wk] = NIL
		}
		wk = 0
	};
	d_step { htag = 0; htop = NIL; printf("ptss_exec_exit: head = (0,255)\n") };
	d_step { torn = 1; printf("ptss_exec_exit: torn_down = true\n") };
	lock = NOBODY
#endif
}

/*
 * The end, every thread done: P3 if the process lives on; P5 if it exec'd or exited --
 * the late releases and failed claims since left everything as tear_down left it.
 */
active proctype the_end()
{
	atomic {
		done == NT && lock == NOBODY ->
		if
		:: torn ->
			assert(htag == 0 && htop == NIL && pages == 0 && !next_mapped);
			for (wk : 0 .. N - 1) {
				assert(next[wk] == 0 && depth[wk] == 0 && owner[wk] == NOBODY)
			}
			for (wk : 0 .. NT - 1) {
				assert(cache[wk] == NIL)
			}
			wk = 0;
			assert(hw >= maxowned)          /* P8: still readable */
		:: else ->
			check_inv();
			check_stats()
		fi;
		assert(child_pages == 0)
	}
}
