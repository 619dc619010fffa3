set terminal pngcairo size 1100,560 font 'DejaVu Sans,10'
set output 'detection.png'

set title 'Global limit: bytes a task allocated after the heap crossed the limit, until interrupted'
set xlabel 'KiB allocated after crossing (1 KiB bins)'
set ylabel 'task runs'
set logscale y
set yrange [0.8:*]
set xrange [0:270]
set grid
set arrow from 256, graph 0 to 256, graph 1 nohead lc rgb 'red' dt 2
set label 'promise: 256 KiB' at 195, graph 0.6 tc rgb 'red'
set key at graph 0.95, graph 0.45
set arrow from 32, graph 0 to 32, graph 1 nohead lc rgb 'gray' dt 3
set label 'check interval 32 KiB' at 34, graph 0.85
plot 'raw/detection.dat' index 0 using 1:2 with steps lw 2 title 'medium-1-64K, 1 thread(s)', 'raw/detection.dat' index 1 using 1:2 with steps lw 2 title 'small-16-1024, 1 thread(s)', 'raw/detection.dat' index 2 using 1:2 with steps lw 2 title 'large-64K-1M, 1 thread(s)', 'raw/detection.dat' index 3 using 1:2 with steps lw 2 title 'medium-1-64K, 2 thread(s)'